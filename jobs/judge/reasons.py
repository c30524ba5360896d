"""Why a row or a sample is unscored: a stable code beside each error message.

Messages are for people and may change; codes are for filtering and counting (the output's
`error_reasons` column, `errors_by_reason` in summary.json). As in Inspect AI's unscored results,
an error is never a fake score: it is a `Failure` with its code and its message.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Reason(str, Enum):
    # The row's own fault: fix the dataset or the config.
    UNREADABLE_ROW = "unreadable_row"  # the reader could not take it in (not a JSON object, id missing or repeated)
    BAD_ROW = "bad_row"  # a field the prompt needs is missing, not text or empty; a bad rubric
    PROMPT_TOO_LONG = "prompt_too_long"  # the prompt leaves no room in the judge's context: not sent
    # The judge answered, but not with a verdict.
    UNPARSED_VERDICT = "unparsed_verdict"
    # The judge gave no usable answer.
    JUDGE_UNREACHABLE = "judge_unreachable"  # no connection, still after the retries
    JUDGE_TIMEOUT = "judge_timeout"  # no answer within judge.timeout_s, still after the retries
    JUDGE_REFUSED = "judge_refused"  # a 4xx answer: the request's fault, not retried
    JUDGE_ERROR = "judge_error"  # a 5xx (or 408/429) answer still after the retries, or invalid JSON
    # Ours.
    INTERNAL_ERROR = "internal_error"  # a bug in judgefleet, caught for this row alone
    UNKNOWN = "unknown"  # written before reason codes existed (a shard of an older run)

    @property
    def never_answered(self) -> bool:
        """The request that failed got no usable answer from the judge."""
        return self in _NEVER_ANSWERED


_NEVER_ANSWERED = frozenset({Reason.JUDGE_UNREACHABLE, Reason.JUDGE_TIMEOUT, Reason.JUDGE_REFUSED, Reason.JUDGE_ERROR})


@dataclass(frozen=True)
class Failure:
    """One error of a row or a sample: its code and its message."""

    reason: Reason
    message: str

    def prefixed(self, prefix: str) -> "Failure":
        return Failure(self.reason, prefix + self.message)

