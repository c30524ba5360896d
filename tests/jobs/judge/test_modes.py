"""Modes: what differs between absolute and relative grading, asked of one object."""

import ast
from pathlib import Path
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import config
from jobs.judge import prompts
from jobs.judge.modes import ABSOLUTE, MODES, RELATIVE, Mode, get_mode
from jobs.judge.prompts import PromptError

REPO = Path(__file__).resolve().parents[3]
RUBRIC = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}


def dataset(**overrides):
    return config.DatasetConfig(path="unused", **overrides)


def test_modes_by_name():
    assert get_mode("absolute") is ABSOLUTE and get_mode("relative") is RELATIVE
    assert get_mode(RELATIVE) is RELATIVE
    assert set(MODES) == set(config.MODES)  # the config accepts exactly the modes there are
    for bad in ("pairwise", "Absolute", "", None, ["absolute"]):
        with pytest.raises(ValueError, match="mode must be one of absolute, relative, pairwise_absolute, got"):
            get_mode(bad)


def test_required_columns():
    d = dataset()
    assert ABSOLUTE.required_columns(d) == ["instruction", "response", "rubric"]
    assert RELATIVE.required_columns(d) == ["instruction", "response_a", "response_b", "rubric"]
    assert ABSOLUTE.required_columns(dataset(rubric="[One rubric]")) == ["instruction", "response"]
    assert ABSOLUTE.required_columns(dataset(rubric_field=None)) == ["instruction", "response"]
    assert RELATIVE.required_columns(dataset(prompt_field="p")) == ["p"]


def test_render_row_per_mode():
    row = {"instruction": "Q?", "response": "R", "response_a": "RA", "response_b": "RB", "rubric": RUBRIC,
           "reference_answer": "ref"}
    d = dataset()
    assert ABSOLUTE.render_row(row, d) == prompts.render_absolute("Q?", "R", RUBRIC, "ref")
    assert RELATIVE.render_row(row, d) == prompts.render_relative("Q?", "RA", "RB", RUBRIC, "ref")
    assert "[Is it right?]\n\n###Feedback: " in RELATIVE.render_row(row, d)  # criteria only
    assert ABSOLUTE.render_row({"p": "whole prompt"}, dataset(prompt_field="p")) == "whole prompt"


@pytest.mark.parametrize("mode, row, d, message", [
    (ABSOLUTE, {"p": None}, dataset(prompt_field="p"), "p is missing"),
    (ABSOLUTE, {"p": 3}, dataset(prompt_field="p"), "p is int, not a prompt"),
    (RELATIVE, {"p": " "}, dataset(prompt_field="p"), "p is empty, not a prompt"),
    (ABSOLUTE, {"instruction": "Q?", "response": "R"}, dataset(), "rubric is missing"),
    (RELATIVE, {"instruction": "Q?", "response_a": "R", "rubric": RUBRIC}, dataset(), "response_b is missing"),
    (RELATIVE, {"instruction": "Q?", "response_a": "R", "response_b": "S", "rubric": {}}, dataset(), "lacks criteria"),
])
def test_render_row_says_what_is_wrong(mode, row, d, message):
    with pytest.raises(PromptError, match=message):
        mode.render_row(row, d)


def test_answers_and_their_scores():
    assert ABSOLUTE.choices == ("1", "2", "3", "4", "5") and RELATIVE.choices == ("A", "B")
    assert [ABSOLUTE.score_of(c) for c in ABSOLUTE.choices] == [1, 2, 3, 4, 5]
    assert [RELATIVE.score_of(c) for c in RELATIVE.choices] == ["A", "B"]
    assert ABSOLUTE.expected([0, 0, 0, 0.5, 0.5]) == pytest.approx(4.5)
    assert RELATIVE.expected([0.25, 0.75]) == 0.25
    assert ABSOLUTE.expected(None) is None and RELATIVE.expected(None) is None
    assert ABSOLUTE.system_prompt == prompts.ABS_SYSTEM_PROMPT and RELATIVE.system_prompt == prompts.REL_SYSTEM_PROMPT


absolute_samples = st.lists(st.one_of(st.none(), st.integers(1, 5)), max_size=7)
relative_samples = st.lists(st.sampled_from([None, "A", "B"]), max_size=7)


@settings(deadline=None)  # a shared CI machine is slow now and then
@given(absolute_samples, st.randoms())
def test_absolute_aggregate_is_the_mean_of_scored_samples(scores, rng):
    got = [s for s in scores if s is not None]
    agg = ABSOLUTE.aggregate(scores)
    assert agg == (pytest.approx(sum(got) / len(got)) if got else None)
    shuffled = list(scores)
    rng.shuffle(shuffled)
    assert ABSOLUTE.aggregate(shuffled) == (pytest.approx(agg) if got else None)
    pa.array([agg], ABSOLUTE.score_type)  # fits its column


@settings(deadline=None)  # a shared CI machine is slow now and then
@given(relative_samples)
def test_relative_aggregate_is_the_majority_and_a_tie_is_unscored(scores):
    a, b = scores.count("A"), scores.count("B")
    agg = RELATIVE.aggregate(scores)
    assert agg == ("A" if a > b else "B" if b > a else None)
    assert RELATIVE.aggregate(list(reversed(scores))) == agg
    pa.array([agg], RELATIVE.score_type)
    if agg is not None:
        assert RELATIVE.row_value(agg) == (1.0 if agg == "A" else 0.0)


def test_summary_names_per_mode():
    assert (ABSOLUTE.metric, ABSOLUTE.expected_metric) == ("mean_score", "mean_score_expected")
    assert (RELATIVE.metric, RELATIVE.expected_metric) == ("a_win_rate", "mean_p_a")
    for mode in MODES.values():
        label, text = mode.headline
        assert label and "{metric}" in text and "{expected}" in text


def test_a_new_mode_is_one_subclass():
    class Swapped(Mode):  # e.g. relative with the responses swapped, as a later issue may add
        name, choices, numeric, answer_text = "swapped", ("A", "B"), False, "A or B"

        def score_of(self, answer):
            return {"A": "B", "B": "A"}[answer]

    from jobs.judge.verdict import parse_verdict

    assert parse_verdict("Feedback: x [RESULT] A", Swapped()).score == "B"


def test_no_mode_name_is_tested_outside_modes():
    """jobs/ asks the mode object; only modes.py knows the names."""
    found = []
    for path in sorted((REPO / "jobs").rglob("*.py")):
        if path.name == "modes.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Constant) and s.value in MODES for s in sides):
                    found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not found, "ask get_mode(...) instead of comparing mode names:\n" + "\n".join(found)
