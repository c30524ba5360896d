"""Reason codes: stable, documented, and telling 'the judge never answered' apart."""

import re
from pathlib import Path

from jobs.judge.reasons import Failure, Reason

README = Path(__file__).resolve().parents[3] / "README.md"


def test_codes_are_stable_snake_case_strings():
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", r.value) for r in Reason)
    assert Reason("judge_timeout") is Reason.JUDGE_TIMEOUT and Reason.JUDGE_TIMEOUT == "judge_timeout"


def test_never_answered():
    assert {r for r in Reason if r.never_answered} == {
        Reason.JUDGE_UNREACHABLE, Reason.JUDGE_TIMEOUT, Reason.JUDGE_REFUSED, Reason.JUDGE_ERROR}


def test_failure_prefix_keeps_the_reason():
    f = Failure(Reason.UNPARSED_VERDICT, "no score").prefixed("sample 2: ")
    assert f == Failure(Reason.UNPARSED_VERDICT, "sample 2: no score")


def test_readme_output_section_lists_every_code():
    text = README.read_text()
    output = text[text.index("## Output"):]
    output = output[:output.index("\n## ", 1)]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", output, re.M))
    assert {r.value for r in Reason} <= documented
