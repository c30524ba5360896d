"""Parse a Prometheus-style judge output into a :class:`Verdict`.

Judges are trained to answer ``Feedback: <text> [RESULT] <answer>``, where the
answer is an integer 1-5 (absolute grading) or ``A``/``B`` (relative grading).
Strict mode accepts only that format; lenient mode also accepts the variants
that Prometheus-family models emit in practice, but refuses (score ``None`` plus
a ``reason``) anything ambiguous rather than guessing. The allowed answers, and
what each scores, are the mode's (`jobs.judge.modes`).
"""

import re
from dataclasses import dataclass
from typing import Optional, Tuple, Union

from jobs.judge.modes import ABSOLUTE, RELATIVE, Mode, get_mode

ABSOLUTE_CHOICES = ABSOLUTE.choices
RELATIVE_CHOICES = RELATIVE.choices
RESULT_MARKER = "[RESULT]"


@dataclass(frozen=True)
class Verdict:
    score: Union[int, str, None]  # the mode's score of the answer (1..5, "A"/"B"), None if unparseable
    feedback: str  # judge's text before the verdict marker, "Feedback:" removed, stripped
    reason: Optional[str] = None  # why score is None; None when parsed
    raw: str = ""  # the original text, unchanged

    @property
    def parsed(self) -> bool:
        return self.score is not None


# No pattern starts with, or doubles up, an unanchored \s*: long whitespace runs
# in model output would otherwise cause quadratic backtracking.

# End-of-sequence tokens some serving stacks leave in the decoded text.
_EOS = r"</s>|<eos>|<\|im_end\|>|<end_of_turn>|<\|eot_id\|>|<\|endoftext\|>|<\|end\|>"
_EOS_RE = re.compile(_EOS)
_FEEDBACK_PREFIX = re.compile(r"\A\s*feedback\s*:", re.I)

# Strict: "Feedback:" prefix, exact "[RESULT]", one space-separated answer token,
# then only whitespace, an optional period and EOS tokens.
_STRICT_PREFIX = re.compile(r"\s*Feedback:")
_STRICT_TAIL = re.compile(rf"[ \t]+([^\s.<]+)\s*(?:\.\s*)?(?:(?:{_EOS})\s*)*")

# Lenient primary markers: [RESULT] / [Result]: / [RESULT: B] / [Response B].
_MARKER = re.compile(r"\[\s*result\s*(?:\]\s*:?|:)|\[\s*response(?=\s+[ab]\s*\])", re.I)
# Lenient fallbacks, only when no primary marker exists and only at the very end
# of the text (so rubric lines such as "Score 1: ..." in an echoed prompt never count).
_SCORE_WORD = re.compile(r"(?:\(\s*)?\bscore\b", re.I)
_ANSWER_ONLY = re.compile(r"(?:[\W\d_]|\b(?:not|or|and|out|of|to|[ab])\b)*", re.I)
_HAS_ANSWER = re.compile(r"\d|\b[ab]\b", re.I)
_TRAILING_FRACTION = re.compile(r"(?<!\w)\d+(?:\.\d+)?\s*(?:/|out\s+of)\s*\d+(?:\.\d+)?[\W_]*\Z", re.I)

# Candidate extraction from the tail after the final marker.
_PLACEHOLDER = re.compile(r"\s*\(\s*(?:an integer|either\b)", re.I)  # the prompt's own "[RESULT] (...)"
_NEGATION = re.compile(r"(?i:\bnot\b)[\W_]*(?:\d|[AB](?!\w))")
_FRACTION = re.compile(r"(?<!\w)(\d+(?:\.\d+)?)\s*(?:/|out\s+of)\s*(\d+(?:\.\d+)?)", re.I)
_NUMBER = re.compile(r"(?<!\w)\d+(?:\.\d+)?(?!\w)")
_UPPER_LETTER = re.compile(r"(?<!\w)[AB](?!\w)")
_LONE_LETTER = re.compile(r"(?:response\s+)?([ab])", re.I)
_WRAPPERS = " \t\r\n\"'`*_()[]{}<>:.,;!?"


def parse_verdict(text: str, mode: str = "absolute", strict: bool = False) -> Verdict:
    """Parse the verdict at the END of a judge output (`mode`: a mode's name; ValueError if unknown).

    Only the last verdict marker counts: judges sometimes echo the prompt (whose
    format line itself contains "[RESULT] (an integer number between 1 and 5)"),
    and the response under evaluation may contain "[RESULT] 5" as a prompt
    injection. Everything before the final marker is feedback, never a verdict.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    m = get_mode(mode)
    if not text.strip():
        return Verdict(None, "", "empty output", text)
    return (_parse_strict if strict else _parse_lenient)(text, m)


def _feedback(head: str) -> str:
    return _FEEDBACK_PREFIX.sub("", head, count=1).strip()


def _parse_strict(text: str, mode: Mode) -> Verdict:
    choices = mode.choices
    idx = text.rfind(RESULT_MARKER)
    if idx < 0:
        return Verdict(None, text.strip(), "no verdict found", text)
    head, tail = text[:idx], text[idx + len(RESULT_MARKER):]
    feedback = _feedback(head)
    if not _STRICT_PREFIX.match(head):
        return Verdict(None, feedback, "strict: missing 'Feedback:' prefix", text)
    m = _STRICT_TAIL.fullmatch(tail)
    if not m:
        return Verdict(None, feedback, f"strict: expected '[RESULT] <{'|'.join(choices)}>' at the end", text)
    answer = m.group(1)
    if answer in choices:
        return Verdict(mode.score_of(answer), feedback, None, text)
    if mode.numeric and answer.isdigit():
        return Verdict(None, feedback, f"out of range: {answer}", text)
    return Verdict(None, feedback, f"strict: expected one of {'/'.join(choices)}, got {answer!r}", text)


def _parse_lenient(text: str, mode: Mode) -> Verdict:
    body = _EOS_RE.sub("", text)
    markers = list(_MARKER.finditer(body))
    if markers:
        # No fallback to an earlier marker when the last one has no usable answer:
        # earlier markers may be echoed instructions or injected text.
        start, end = markers[-1].span()
    else:
        span = _trailing_score(body)
        if span is None:
            return Verdict(None, text.strip(), "no verdict found", text)
        start, end = span
    score, reason = _decide(body[end:], mode)
    return Verdict(score, _feedback(body[:start]), reason, text)


def _trailing_score(body: str) -> Optional[Tuple[int, int]]:
    """Span of a marker-less verdict ("Score: 3", "(Score 5)", "4/5") ending the text."""
    words = list(_SCORE_WORD.finditer(body))
    if words:
        tail = body[words[-1].end():]
        if _ANSWER_ONLY.fullmatch(tail) and _HAS_ANSWER.search(tail):
            return words[-1].span()
    m = _TRAILING_FRACTION.search(body)
    return (m.start(), m.start()) if m else None


def _decide(tail: str, mode: Mode) -> Tuple[Union[int, str, None], Optional[str]]:
    """Pick the single answer in the text after the final marker, or say why not.

    Any trailing text is tolerated as long as it holds no *other* candidate
    answer; repeating the same answer ("4 (4)", "4/5") is fine.
    """
    if _PLACEHOLDER.match(tail):
        return None, "final marker is followed by the prompt's placeholder (echoed instructions), not an answer"
    if _NEGATION.search(tail):
        return None, "negated answer (e.g. 'not 3')"
    fractions = list(_FRACTION.finditer(tail))
    if mode.numeric:  # "4/5" must be on the mode's own scale
        for f in fractions:
            if f.group(2) != mode.choices[-1]:
                return None, f"out of range scale: {f.group(1)}/{f.group(2)} (expected a {mode.choices[0]}-{mode.choices[-1]} score)"
    # "4/5" and "4 out of 5" count as the single candidate 4.
    numbers = _NUMBER.findall(_FRACTION.sub(lambda f: f" {f.group(1)} ", tail))
    # Letters: uppercase standalone A/B anywhere; lowercase a/b only when it is the
    # whole answer ("b", "(a)", "Response b"), so the article "a" in prose never counts.
    lone = _LONE_LETTER.fullmatch(tail.strip(_WRAPPERS))
    letters = [lone.group(1).upper()] if lone else _UPPER_LETTER.findall(tail)
    found, other = (numbers, letters) if mode.numeric else (letters, numbers)
    if not found:
        if other:
            return None, f"expected {mode.answer_text} in {mode.name} mode, got {other[0]!r}"
        return None, "no answer after the final verdict marker"
    distinct = list(dict.fromkeys(found))
    if len(distinct) > 1:
        count = {2: "two", 3: "three"}.get(len(distinct), str(len(distinct)))
        return None, f"ambiguous: {count} different verdicts ({' and '.join(distinct)})"
    answer = distinct[0]
    if mode.numeric and "." in answer:
        return None, f"not an integer: {answer}"
    if answer not in mode.choices:
        return None, f"out of range: {answer}"
    return mode.score_of(answer), None
