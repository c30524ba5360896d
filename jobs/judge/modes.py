"""Ways of judging a row, each one object: everything that differs between them lives here.

A mode owns the system prompt, the prompt a row renders to and the dataset columns it needs, the
answers a judge may give and what each scores, the expected value of a distribution over them,
how a row's samples aggregate, the Arrow types of the score columns, and the summary's arithmetic.
The rest of jobs/ asks the mode and never tests its name, so a new mode (relative with the
responses swapped, two absolute grades side by side) is one subclass registered in `MODES`.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import pyarrow as pa

from jobs.judge import prompts
from jobs.judge.prompts import PromptError

Score = Union[int, str, None]


class Mode:
    name: str
    choices: Tuple[str, ...]  # the answers a judge may give after "[RESULT]"
    numeric: bool  # answers are integers on a scale (else letters)
    answer_text: str  # the answers in words, for parse errors
    system_prompt: str
    sample_type: pa.DataType  # Arrow type of each sample's score (`scores`)
    score_type: pa.DataType  # Arrow type of the row's aggregate (`score`)
    # summary.json: `metric` is the mean of `row_value` over scored rows, `expected_metric` the
    # mean of the samples' expected values; the terminal table shows them as `headline`.
    metric: str
    expected_metric: str
    headline: Tuple[str, str]  # (label, text with {metric} and {expected})
    metric_is_share: bool  # the metric is a fraction (shown as a percentage)

    # -- prompts ---------------------------------------------------------------------------------
    def required_columns(self, d) -> List[str]:
        """The dataset columns (of a `DatasetConfig`) that rendering reads; the id column aside."""
        if d.prompt_field:
            return [d.prompt_field]
        needed = [d.instruction_field, *self.response_columns(d)]
        if d.rubric is None and d.rubric_field:
            needed.append(d.rubric_field)
        return needed

    def render_row(self, row: Mapping[str, Any], d) -> str:
        """The judge prompt of a record; PromptError says which field is wrong."""
        if d.prompt_field:  # the dataset holds the whole prompt
            value = row.get(d.prompt_field)
            if value is None:
                raise PromptError(f"{d.prompt_field} is missing")
            if not isinstance(value, str) or not value.strip():
                kind = "empty" if isinstance(value, str) else type(value).__name__
                raise PromptError(f"{d.prompt_field} is {kind}, not a prompt")
            return value
        rubric = d.rubric if d.rubric is not None else row.get(d.rubric_field) if d.rubric_field else None
        if rubric is None:
            raise PromptError(f"rubric is missing (column '{d.rubric_field}', or set dataset.rubric for every row)")
        reference = row.get(d.reference_field) if d.reference_field else None
        return self.render(row, d, rubric, reference)

    def response_columns(self, d) -> List[str]:
        raise NotImplementedError

    def render(self, row: Mapping[str, Any], d, rubric: Any, reference: Any) -> str:
        raise NotImplementedError

    # -- answers ---------------------------------------------------------------------------------
    def score_of(self, answer: str) -> Score:
        """The score of an allowed answer token."""
        return answer

    def expected(self, probs: Optional[Sequence[float]]) -> Optional[float]:
        """The expected value of a distribution over `choices`."""
        raise NotImplementedError

    def aggregate(self, scores: Sequence[Score]) -> Score:
        """A row's score from its samples' (None: unscored sample)."""
        raise NotImplementedError

    def row_value(self, score: Score) -> float:
        """What a scored row adds to the summary's `metric`."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<mode {self.name}>"


class Absolute(Mode):
    """Prometheus absolute grading: one response, a 1-5 score on a rubric."""

    name = "absolute"
    choices = ("1", "2", "3", "4", "5")
    numeric = True
    answer_text = "a score 1-5"
    system_prompt = prompts.ABS_SYSTEM_PROMPT
    sample_type = pa.int64()
    score_type = pa.float64()
    metric, expected_metric = "mean_score", "mean_score_expected"
    headline = ("mean score", "{metric}  (probability-weighted {expected})")
    metric_is_share = False

    def response_columns(self, d) -> List[str]:
        return [d.response_field]

    def render(self, row, d, rubric, reference) -> str:
        return prompts.render_absolute(row.get(d.instruction_field), row.get(d.response_field), rubric, reference)

    def score_of(self, answer: str) -> int:
        return int(answer)

    def expected(self, probs):
        """The mean score."""
        return None if probs is None else sum(int(c) * p for c, p in zip(self.choices, probs))

    def aggregate(self, scores):
        """The mean of the scored samples."""
        got = [x for x in scores if x is not None]
        return sum(got) / len(got) if got else None

    def row_value(self, score) -> float:
        return float(score)


class Relative(Mode):
    """Prometheus 2 relative grading: which of two responses (A or B) is better."""

    name = "relative"
    choices = ("A", "B")
    numeric = False
    answer_text = "A or B"
    system_prompt = prompts.REL_SYSTEM_PROMPT
    sample_type = pa.string()
    score_type = pa.string()
    metric, expected_metric = "a_win_rate", "mean_p_a"
    headline = ("A preferred", "{metric} of scored rows (mean P(A) {expected})")
    metric_is_share = True

    def response_columns(self, d) -> List[str]:
        return [d.response_a_field, d.response_b_field]

    def render(self, row, d, rubric, reference) -> str:
        return prompts.render_relative(row.get(d.instruction_field), row.get(d.response_a_field),
                                       row.get(d.response_b_field), rubric, reference)

    def expected(self, probs):
        """The probability that A wins."""
        return None if probs is None else probs[0]

    def aggregate(self, scores):
        """The majority answer; None on a tie."""
        a, b = sum(x == "A" for x in scores), sum(x == "B" for x in scores)
        return "A" if a > b else "B" if b > a else None

    def row_value(self, score) -> float:
        """A row counts 1 where A won: the mean is A's win rate."""
        return 1.0 if score == "A" else 0.0


ABSOLUTE, RELATIVE = Absolute(), Relative()
MODES: Dict[str, Mode] = {m.name: m for m in (ABSOLUTE, RELATIVE)}


def get_mode(mode: Union[str, Mode]) -> Mode:
    """The mode of a name (`judge.mode`); a Mode is returned as it is."""
    if isinstance(mode, Mode):
        return mode
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}") from None
