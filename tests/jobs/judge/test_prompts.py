"""Templates are a wire format: re-rendering Prometheus' own eval prompts must give them back byte for byte."""

import json
import re

import pytest

from jobs.judge.prompts import (
    ABSOLUTE_PROMPT,
    RELATIVE_PROMPT,
    RELATIVE_PROMPT_WO_REF,
    PromptError,
    format_rubric,
    render_absolute,
    render_relative,
)
from tests.conftest import HHH, VICUNA

needs_shared = pytest.mark.skipif(not VICUNA.exists(), reason="../shared/data/prometheus is not here")

_ABS = re.compile(
    r"\A###Task Description:\n.*?\n\n###The instruction to evaluate:\n(?P<instruction>.*?)\n\n"
    r"###Response to evaluate:\n(?P<response>.*?)\n\n(?:###Reference Answer \(Score 5\):\n(?P<ref>.*)\n\n)?"
    r"###Score Rubrics:\n\[(?P<criteria>.*?)\]\n(?P<scores>Score 1: .*)\n\n###Feedback: \Z",
    re.S,
)


def _fields(prompt: str) -> dict:
    m = _ABS.match(prompt)
    assert m, prompt[:300]
    lines = m["scores"].split("\n")
    rubric = {"criteria": m["criteria"]}
    for i, line in enumerate(lines, start=1):
        prefix = f"Score {i}: "
        assert line.startswith(prefix)
        rubric[f"score{i}_description"] = line[len(prefix):]
    return {"instruction": m["instruction"], "response": m["response"], "reference_answer": m["ref"], "rubric": rubric}


@needs_shared
def test_vicuna_prompts_rerender_byte_exact():
    rows = json.loads(VICUNA.read_text())
    for row in rows:
        f = _fields(row["instruction"])
        assert f["reference_answer"], "vicuna prompts carry a reference answer"
        assert render_absolute(f["instruction"], f["response"], f["rubric"], f["reference_answer"]) == row["instruction"]


@needs_shared
def test_hhh_prompts_without_reference_rerender_byte_exact():
    rows = json.loads(HHH.read_text())
    for row in rows:
        for key in ("chosen_instruction", "rejected_instruction"):
            f = _fields(row[key])
            assert f["reference_answer"] is None
            assert render_absolute(f["instruction"], f["response"], f["rubric"]) == row[key]


def test_rubric_text_is_used_as_given_and_mapping_is_laid_out():
    mapping = {"criteria": "Is it kind?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}
    assert format_rubric(mapping) == "[Is it kind?]\nScore 1: level 1\nScore 2: level 2\nScore 3: level 3\nScore 4: level 4\nScore 5: level 5"
    assert format_rubric("  [Custom]\nScore 1: x  ") == "[Custom]\nScore 1: x"
    assert format_rubric(mapping, criteria_only=True) == "[Is it kind?]"
    assert format_rubric({"criteria": "Is it kind?"}, criteria_only=True) == "[Is it kind?]"


@pytest.mark.parametrize(
    "args, message",
    [
        ((None, "r", "rub"), "instruction is missing"),
        (("i", "", "rub"), "response is empty"),
        (("i", 5, "rub"), "response is int, not text"),
        (("i", "r", {"criteria": "c"}), "rubric lacks score1_description"),
        (("i", "r", 3.0), "rubric must be text or a mapping"),
        (("i", "r", "  "), "rubric is empty"),
    ],
)
def test_bad_fields_name_the_problem(args, message):
    with pytest.raises(PromptError, match=message):
        render_absolute(*args)


def test_relative_templates_follow_prometheus2_structure():
    with_ref = render_relative("Q?", "answer one", "answer two", "[Helpful?]", "ideal")
    assert with_ref == RELATIVE_PROMPT.format(instruction="Q?", response_A="answer one", response_B="answer two",
                                              reference_answer="ideal", rubric="[Helpful?]")
    assert "###Reference Answer:\nideal\n\n###Score Rubric:\n[Helpful?]\n\n###Feedback: " in with_ref
    assert 'two responses to evaluate (denoted as Response A and Response B), a reference answer, and' in with_ref
    without = render_relative("Q?", "answer one", "answer two", "[Helpful?]")
    assert without == RELATIVE_PROMPT_WO_REF.format(instruction="Q?", response_A="answer one",
                                                    response_B="answer two", rubric="[Helpful?]")
    assert "###Reference Answer" not in without
    for prompt in (with_ref, without):
        assert prompt.startswith("###Task Description:\n")
        assert '"Feedback: (write a feedback for criteria) [RESULT] (Either "A" or "B")"' in prompt
        assert "###Response A:\nanswer one\n\n###Response B:\nanswer two\n\n" in prompt


def test_absolute_with_reference_uses_the_trained_format_line():
    prompt = render_absolute("Q?", "R", "[c]\nScore 1: a", "ref")
    assert prompt == ABSOLUTE_PROMPT.format(instruction="Q?", response="R", reference_answer="ref", rubric="[c]\nScore 1: a")
    assert '3. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] (an integer number between 1 and 5)"' in prompt
    assert prompt.endswith("###Feedback: ")
    # An empty reference answer means "no reference", not an empty section.
    assert "###Reference Answer" not in render_absolute("Q?", "R", "[c]", "  ")
