"""A whole Prometheus absolute-grading prompt split back into its columns.

Prometheus' public eval sets (vicuna_eval.json's `instruction`, hhh_alignment_eval.json's
`chosen_instruction` / `rejected_instruction`) hold complete prompts, which relative grading in
both orders cannot use: it renders each order from columns. `parse_absolute_prompt` reads the
sections of the layout that `jobs.judge.prompts.render_absolute` writes -

    ###Task Description:            (optional here; the preamble)
    ###The instruction to evaluate:
    ###Response to evaluate:
    ###Reference Answer (Score 5):   (optional)
    ###Score Rubrics:                [criteria] then "Score 1: ..." .. "Score 5: ..."
    ###Feedback:

- back into {instruction, response, reference_answer, rubric}, the rubric as the mapping a
dataset's `rubric` column takes. Render then parse gives back the texts (rubric texts stripped,
as rendering strips them).

Robust about spelling: a header is a line starting `###`, in any case and spacing, with or
without "The", "(Score 5)" and the plural ("Score Rubric"), CRLF line ends read as LF. Strict
about structure: each required section once, in order, not empty; a rubric with a bracketed
criteria and Score 1 to 5 in order. Anything else is a `SectionError` (a ValueError) naming the
section. A line starting `###` with another name is text: a markdown heading in a response, or
Alpaca's "### Instruction:" / "### Response:", which is why those bare names are not headers.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from jobs.judge.prompts import RUBRIC_KEYS

TASK, INSTRUCTION, RESPONSE, REFERENCE, RUBRIC, FEEDBACK = (
    "task", "instruction", "response", "reference_answer", "rubric", "feedback")
# The section order of an absolute prompt, the sections it must have, and (for messages) the
# headers render_absolute writes.
ORDER = (TASK, INSTRUCTION, RESPONSE, REFERENCE, RUBRIC, FEEDBACK)
REQUIRED = (INSTRUCTION, RESPONSE, RUBRIC, FEEDBACK)
CANONICAL = {TASK: "###Task Description:", INSTRUCTION: "###The instruction to evaluate:",
             RESPONSE: "###Response to evaluate:", REFERENCE: "###Reference Answer (Score 5):",
             RUBRIC: "###Score Rubrics:", FEEDBACK: "###Feedback:"}

# Header names, lower-cased without spaces, -> section.
_NAMES = {
    "taskdescription": TASK,
    "theinstructiontoevaluate": INSTRUCTION, "instructiontoevaluate": INSTRUCTION,
    "responsetoevaluate": RESPONSE,
    "referenceanswer(score5)": REFERENCE, "referenceanswer": REFERENCE,
    "scorerubrics": RUBRIC, "scorerubric": RUBRIC,
    "feedback": FEEDBACK,
}
# Prometheus 2's relative layout, named when a text lacks the absolute sections.
_RELATIVE = re.compile(r"^###[ \t]*Response[ \t]*[AB][ \t]*:", re.M | re.I)
_HEADER = re.compile(r"^###[ \t]*(?P<name>[^:\n]+?)[ \t]*:(?P<rest>[^\n]*)$", re.M)
_SCORE_LINE = re.compile(r"^[ \t]*Score[ \t]*(?P<n>[1-5])[ \t]*:", re.M | re.I)


class SectionError(ValueError):
    """A text that is not a Prometheus absolute prompt; the message names the section at fault."""


def find_headers(text: str) -> List[Tuple[str, int, int]]:
    """The section headers in `text`: (section, start of the header line, end of it with its newline).

    A header is alone on its line, except "###Feedback:" (a prompt with its answer may follow)."""
    found = []
    for m in _HEADER.finditer(text):
        section = _NAMES.get(re.sub(r"\s+", "", m.group("name").lower()))
        if section is None or (m.group("rest").strip() and section != FEEDBACK):
            continue
        end = m.end() + 1 if text[m.end():m.end() + 1] == "\n" else m.end()
        if section == FEEDBACK:
            end = m.start("rest")  # what follows the colon is the judge's answer, not a section body
        found.append((section, m.start(), end))
    return found


def parse_absolute_prompt(text: Any) -> Dict[str, Any]:
    """{instruction, response, reference_answer (None without one), rubric ({criteria,
    score1_description..score5_description})} of a whole Prometheus absolute prompt.

    SectionError (a ValueError) names what is missing, repeated, out of order or empty."""
    if not isinstance(text, str):
        raise SectionError(f"a prompt must be text, got {type(text).__name__}")
    text = text.replace("\r\n", "\n")
    headers = find_headers(text)
    seen = [section for section, _, _ in headers]
    for section in ORDER:
        if seen.count(section) > 1:
            raise SectionError(f"{CANONICAL[section]} appears {seen.count(section)} times (a response or instruction "
                               "may quote a header); a prompt has each section once")
    missing = [CANONICAL[s] for s in REQUIRED if s not in seen]
    if missing:
        relative = " (it looks like a relative A/B prompt: it has ###Response A:)" if _RELATIVE.search(text) else ""
        raise SectionError(f"not a Prometheus absolute prompt: no {', '.join(missing)} section"
                           + ("s" if len(missing) > 1 else "") + relative)
    if seen != sorted(seen, key=ORDER.index):
        raise SectionError("sections out of order: " + ", ".join(CANONICAL[s] for s in seen)
                           + f" (expected {', '.join(CANONICAL[s] for s in ORDER if s in seen)})")
    bodies = {}
    for (section, _, end), following in zip(headers, headers[1:] + [(None, len(text), len(text))]):
        bodies[section] = _body(text[end:following[1]])
    for section in (INSTRUCTION, RESPONSE, RUBRIC):
        if not bodies[section].strip():
            raise SectionError(f"{CANONICAL[section]} is empty")
    reference = bodies.get(REFERENCE)
    return {"instruction": bodies[INSTRUCTION], "response": bodies[RESPONSE],
            "reference_answer": reference if reference is not None and reference.strip() else None,
            "rubric": parse_rubric(bodies[RUBRIC])}


def parse_rubric(text: str) -> Dict[str, str]:
    """`[criteria]` then `Score 1: ...` to `Score 5: ...` (a description may span lines) -> the
    mapping of `jobs.judge.prompts.RUBRIC_KEYS`; SectionError when the layout is otherwise."""
    lines = list(_SCORE_LINE.finditer(text))
    numbers = [int(m.group("n")) for m in lines]
    if numbers != [1, 2, 3, 4, 5]:
        shown = ", ".join(f"Score {n}" for n in numbers) or "none"
        raise SectionError(f"{CANONICAL[RUBRIC]} needs 'Score 1:' to 'Score 5:' lines, once each and in order; "
                           f"found {shown}")
    criteria = text[:lines[0].start()].strip()
    if not (criteria.startswith("[") and criteria.endswith("]")) or not criteria[1:-1].strip():
        raise SectionError(f"{CANONICAL[RUBRIC]} needs its criteria in brackets before 'Score 1:', "
                           f"found {criteria[:60]!r}")
    rubric = {RUBRIC_KEYS[0]: criteria[1:-1].strip()}
    for key, m, following in zip(RUBRIC_KEYS[1:], lines, lines[1:] + [None]):
        description = text[m.end():following.start() if following else len(text)].strip()
        if not description:
            raise SectionError(f"{CANONICAL[RUBRIC]}: 'Score {m.group('n')}:' has no description")
        rubric[key] = description
    return rubric


def _body(raw: str) -> str:
    """A section's text: what lies between its header line and the blank line before the next."""
    if raw.endswith("\n\n"):
        return raw[:-2]
    return raw[:-1] if raw.endswith("\n") else raw


def same_task(a: Dict[str, Any], b: Dict[str, Any]) -> Optional[str]:
    """Which of instruction, rubric, reference answer two parsed prompts do not share (None: all)."""
    for key in ("instruction", "rubric", "reference_answer"):
        if a.get(key) != b.get(key):
            return key
    return None
