"""Ways of judging a row, each one object: everything that differs between them lives here.

A mode owns the system prompt, the prompt a row renders to and the dataset columns it needs, the
answers a judge may give and what each scores, the expected value of a distribution over them,
how a row's samples aggregate, the Arrow types of the score columns, and the summary's arithmetic.
The rest of jobs/ asks the mode and never tests its name, so a new mode is one subclass
registered in `MODES`.

A row may render to more than one prompt, judged together (the same row, concurrently, so a
route that caches prompt prefixes prefills their shared start once): relative grading with the
responses swapped (`judge.swap`, `SwappedRelative`: both orders, an inconsistent pair a tie) and
`pairwise_absolute` (the chosen and the rejected response each graded on the absolute scale).
Such a mode judges each prompt as its `judged_as` mode does and combines the prompts' samples
into the row's columns (`row_values`), with its own extra columns (`extra_fields`).
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
    # The prompts a row renders to, by name (an error of the second is prefixed "BA: " ...).
    orders: Tuple[str, ...] = ("",)
    # `judge.swap` left unset (null) means this; a mode that cannot swap says False.
    swap_default: bool = False
    # Does a verdict name a response by its position (A/B)? Then position bias can be measured.
    positional: bool = False

    @property
    def judged_as(self) -> "Mode":
        """The mode each prompt is judged in: its answers, system prompt and verdict parsing."""
        return self

    def with_swap(self, swap: Optional[bool]) -> "Mode":
        """This mode with `judge.swap` applied (None: the mode's default); ValueError where it cannot."""
        if swap:
            raise ValueError(f"judge.swap: {self.name} mode has no A/B order to swap; leave judge.swap unset "
                             "(or false), or use judge.mode=relative")
        return self

    # -- prompts ---------------------------------------------------------------------------------
    def dataset_problem(self, d) -> Optional[str]:
        """What a `DatasetConfig` lacks for this mode (a config error), or None."""
        return None

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

    def render_prompts(self, row: Mapping[str, Any], d) -> List[str]:
        """Every prompt of a record, in `orders`' order."""
        return [self.render_row(row, d)]

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

    # -- a row's columns -------------------------------------------------------------------------
    def extra_fields(self) -> List[Tuple[str, pa.DataType]]:
        """Columns this mode writes beside the ones every mode writes."""
        return []

    def row_values(self, orders: Sequence[Sequence[Any]]) -> Dict[str, Any]:
        """The score columns of a row from each prompt's samples (objects with score, expected,
        probs, feedback): scores, score, score_expected, score_probs, feedbacks, `extra_fields`."""
        samples = orders[0]
        scores = [x.score for x in samples]
        return {"scores": scores, "score": self.aggregate(scores), "score_expected": _mean(x.expected for x in samples),
                "score_probs": [x.probs for x in samples], "feedbacks": [x.feedback for x in samples]}

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
    positional = True
    swap_default = True

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

    def with_swap(self, swap: Optional[bool]) -> Mode:
        return SWAPPED_RELATIVE if (self.swap_default if swap is None else swap) else self


def flip(answer: Score) -> Score:
    """A verdict of the swapped order in the original labels: its "A" is the original "B"."""
    return {"A": "B", "B": "A"}.get(answer) if answer is not None else None


def swap_aggregate(score_ab: Score, score_ba: Score) -> Score:
    """The verdict of both orders (each in original labels): the answer they agree on; a tie
    (None) where they differ or either has none."""
    return score_ab if score_ab is not None and score_ab == score_ba else None


def consistent(score_ab: Score, score_ba: Score) -> Optional[bool]:
    """Did both orders name the same response? None where an order has no verdict."""
    return None if score_ab is None or score_ba is None else score_ab == score_ba


class SwappedRelative(Relative):
    """Relative grading in both orders: (A, B), then (B, A) with the responses exchanged.

    `scores` and `score_probs` are the first order's samples, `scores_swapped` the second's
    mapped back to the original labels; `score_ab` / `score_ba` each order's majority, and `score`
    their agreement (an inconsistent pair is a tie: None, `consistent` false). `score_expected`
    is P(the original A wins) averaged over the samples of both orders."""

    orders = ("AB", "BA")

    def with_swap(self, swap: Optional[bool]) -> Mode:
        return RELATIVE.with_swap(swap)

    def render_prompts(self, row, d) -> List[str]:
        if d.prompt_field:
            raise PromptError(f"judge.swap needs the two responses as columns, and {d.prompt_field} holds whole prompts")
        swapped = dict(row)
        swapped[d.response_a_field], swapped[d.response_b_field] = row.get(d.response_b_field), row.get(d.response_a_field)
        return [self.render_row(row, d), self.render_row(swapped, d)]

    def extra_fields(self):
        return [("scores_swapped", pa.list_(pa.string())), ("score_ab", pa.string()), ("score_ba", pa.string()),
                ("consistent", pa.bool_()), ("score_probs_swapped", pa.list_(pa.list_(pa.float64()))),
                ("feedbacks_swapped", pa.list_(pa.string()))]

    def row_values(self, orders):
        first, second = orders
        ab = [x.score for x in first]
        ba = [flip(x.score) for x in second]
        score_ab, score_ba = self.aggregate(ab), self.aggregate(ba)
        p_a = [x.expected for x in first] + [None if x.expected is None else 1.0 - x.expected for x in second]
        return {"scores": ab, "score": swap_aggregate(score_ab, score_ba), "score_expected": _mean(p_a),
                "score_probs": [x.probs for x in first], "feedbacks": [x.feedback for x in first],
                "scores_swapped": ba, "score_ab": score_ab, "score_ba": score_ba,
                "consistent": consistent(score_ab, score_ba),
                "score_probs_swapped": [None if x.probs is None else list(reversed(x.probs)) for x in second],
                "feedbacks_swapped": [x.feedback for x in second]}


class PairwiseAbsolute(Mode):
    """Two responses, each graded alone on the absolute 1-5 scale; the higher one wins.

    Rows give a chosen and a rejected response (`dataset.chosen_field` / `rejected_field`), or
    two complete absolute prompts (`dataset.prompt_field` for the chosen one,
    `dataset.rejected_prompt_field` for the rejected one, as in hhh_alignment_eval.json).
    `score` is "A" when the chosen (first) one scores higher, "B" when lower, None on a tie: the
    judge is right where it is "A". `scores` are the chosen one's samples, `scores_b` the rejected
    one's; `score_a` / `score_b` their means; `score_expected` the probability-weighted margin
    (chosen minus rejected)."""

    name = "pairwise_absolute"
    choices = ("A", "B")
    numeric = False
    answer_text = "A or B"
    system_prompt = prompts.ABS_SYSTEM_PROMPT
    sample_type = pa.int64()
    score_type = pa.string()
    metric, expected_metric = "chosen_win_rate", "mean_margin_expected"
    headline = ("chosen scored higher", "{metric} of scored rows (mean probability-weighted margin {expected})")
    metric_is_share = True
    orders = ("chosen", "rejected")

    @property
    def judged_as(self) -> Mode:
        return ABSOLUTE

    def dataset_problem(self, d) -> Optional[str]:
        if d.prompt_field and not d.rejected_prompt_field:
            return ("dataset.rejected_prompt_field: pairwise_absolute mode with dataset.prompt_field (the chosen "
                    "response's prompt) needs the column of the rejected response's prompt too")
        return None

    def required_columns(self, d) -> List[str]:
        if d.prompt_field:
            return [d.prompt_field, d.rejected_prompt_field]
        return super().required_columns(d)

    def response_columns(self, d) -> List[str]:
        return [d.chosen_field, d.rejected_field]

    def render_prompts(self, row, d) -> List[str]:
        if d.prompt_field:
            return [self.render_row(row, d), self.render_row(row, _Fields(d, prompt_field=d.rejected_prompt_field))]
        return [self.render_row(row, d), self.render_row(row, _Fields(d, chosen_field=d.rejected_field))]

    def render(self, row, d, rubric, reference) -> str:
        try:
            return prompts.render_absolute(row.get(d.instruction_field), row.get(d.chosen_field), rubric, reference)
        except PromptError as e:  # "response is missing": name the column
            if str(e).startswith("response "):
                raise PromptError(d.chosen_field + str(e)[len("response"):]) from None
            raise

    def aggregate(self, scores):
        """The row's verdict from (chosen mean, rejected mean): A, B, or None on a tie."""
        a, b = scores
        if a is None or b is None or a == b:
            return None
        return "A" if a > b else "B"

    def row_value(self, score) -> float:
        """A row counts 1 where the chosen response scored higher."""
        return 1.0 if score == "A" else 0.0

    def extra_fields(self):
        return [("scores_b", pa.list_(pa.int64())), ("score_a", pa.float64()), ("score_b", pa.float64()),
                ("score_probs_b", pa.list_(pa.list_(pa.float64()))), ("feedbacks_b", pa.list_(pa.string()))]

    def row_values(self, orders):
        chosen, rejected = orders
        score_a, score_b = (ABSOLUTE.aggregate([x.score for x in o]) for o in orders)
        ea, eb = _mean(x.expected for x in chosen), _mean(x.expected for x in rejected)
        return {"scores": [x.score for x in chosen], "score": self.aggregate([score_a, score_b]),
                "score_expected": None if ea is None or eb is None else ea - eb,
                "score_probs": [x.probs for x in chosen], "feedbacks": [x.feedback for x in chosen],
                "scores_b": [x.score for x in rejected], "score_a": score_a, "score_b": score_b,
                "score_probs_b": [x.probs for x in rejected], "feedbacks_b": [x.feedback for x in rejected]}


class _Fields:
    """A dataset config with some fields read from elsewhere (the rejected prompt's column)."""

    def __init__(self, d, **changed):
        self._d, self._changed = d, changed

    def __getattr__(self, name):
        return self._changed[name] if name in self._changed else getattr(self._d, name)


def _mean(values) -> Optional[float]:
    got = [v for v in values if v is not None]
    return sum(got) / len(got) if got else None


ABSOLUTE, RELATIVE, PAIRWISE_ABSOLUTE = Absolute(), Relative(), PairwiseAbsolute()
SWAPPED_RELATIVE = SwappedRelative()
MODES: Dict[str, Mode] = {m.name: m for m in (ABSOLUTE, RELATIVE, PAIRWISE_ABSOLUTE)}
# Every mode a job may run in (`judge.mode` with `judge.swap` applied), for the union of columns.
JOB_MODES: Tuple[Mode, ...] = (ABSOLUTE, RELATIVE, SWAPPED_RELATIVE, PAIRWISE_ABSOLUTE)


def job_mode(mode: Union[str, Mode], swap: Optional[bool] = None) -> Mode:
    """The mode a job runs in: `judge.mode` with `judge.swap` (None: the mode's default)."""
    return get_mode(mode).with_swap(swap)


def get_mode(mode: Union[str, Mode]) -> Mode:
    """The mode of a name (`judge.mode`); a Mode is returned as it is."""
    if isinstance(mode, Mode):
        return mode
    try:
        return MODES[mode]
    except (KeyError, TypeError):
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}") from None
