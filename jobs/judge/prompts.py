"""Prometheus prompt templates: a wire format, kept character for character.

Absolute grading (with and without a reference answer) is the format of the Feedback Collection
that Prometheus 1 and 2 were trained on, as it appears in prometheus-eval's benchmark files
(prometheus-eval/prometheus-eval, eval/benchmark/data/vicuna_eval.json, hhh_alignment_eval.json);
prometheus-eval's library later dropped "Feedback: " from the format line, the training data
has it. Relative grading is the Preference Collection format of Prometheus 2
(prometheus-eval/prometheus-eval, libs/prometheus-eval/prometheus_eval/prompts.py,
RELATIVE_PROMPT and RELATIVE_PROMPT_WO_REF), the same text as the prometheus-7b-v2.0 model card.
The system messages and the score-rubric layout come from that same prompts.py.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

ABS_SYSTEM_PROMPT = (
    "You are a fair judge assistant tasked with providing clear, objective feedback based on specific criteria, "
    "ensuring each assessment reflects the absolute standards set for performance."
)
REL_SYSTEM_PROMPT = (
    "You are a fair judge assistant assigned to deliver insightful feedback that compares individual performances, "
    "highlighting how each stands relative to others within the same cohort."
)

_ABS_HEADER = """###Task Description:
An instruction (might include an Input inside it), a response to evaluate, {given}and a score rubric representing a evaluation criteria are given.
1. Write a detailed feedback that assess the quality of the response strictly based on the given score rubric, not evaluating in general.
2. After writing a feedback, write a score that is an integer between 1 and 5. You should refer to the score rubric.
3. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] (an integer number between 1 and 5)"
4. Please do not generate any other opening, closing, and explanations.

###The instruction to evaluate:
{instruction}

###Response to evaluate:
{response}

"""
ABSOLUTE_PROMPT = (
    _ABS_HEADER.replace("{given}", "a reference answer that gets a score of 5, ")
    + """###Reference Answer (Score 5):
{reference_answer}

###Score Rubrics:
{rubric}

###Feedback: """
)
ABSOLUTE_PROMPT_WO_REF = (
    _ABS_HEADER.replace("{given}", "")
    + """###Score Rubrics:
{rubric}

###Feedback: """
)

_REL_HEADER = """###Task Description:
An instruction (might include an Input inside it), two responses to evaluate (denoted as Response A and Response B), {given}and an evaluation criteria are given.
1. Write a detailed feedback that assess the quality of the two responses strictly based on the given evaluation criteria, not evaluating in general.
2. Make comparisons between Response A, Response B, and the Reference Answer. Instead of examining Response A and Response B separately, go straight to the point and mention about the commonalities and differences between them.
3. After writing the feedback, indicate the better response, either "A" or "B".
4. The output format should look as follows: "Feedback: (write a feedback for criteria) [RESULT] (Either "A" or "B")"
5. Please do not generate any other opening, closing, and explanations.

###Instruction:
{instruction}

###Response A:
{response_A}

###Response B:
{response_B}

"""
RELATIVE_PROMPT = (
    _REL_HEADER.replace("{given}", "a reference answer, ")
    + """###Reference Answer:
{reference_answer}

###Score Rubric:
{rubric}

###Feedback: """
)
RELATIVE_PROMPT_WO_REF = (
    _REL_HEADER.replace("{given}", "")
    + """###Score Rubric:
{rubric}

###Feedback: """
)

SCORE_RUBRIC_TEMPLATE = """[{criteria}]
Score 1: {score1_description}
Score 2: {score2_description}
Score 3: {score3_description}
Score 4: {score4_description}
Score 5: {score5_description}"""

RUBRIC_KEYS = ("criteria",) + tuple(f"score{i}_description" for i in range(1, 6))

# The marker after which the judge writes its verdict.
RESULT_MARKER = "[RESULT]"


class PromptError(ValueError):
    """A row lacks what its prompt needs; the message says which field and why."""


def format_rubric(rubric: Any, criteria_only: bool = False) -> str:
    """A rubric as the prompt shows it: text as given, or a mapping laid out as Prometheus does.

    `criteria_only` (relative grading) shows only the bracketed criteria line, as
    prometheus-eval's load_rubric does.
    """
    if isinstance(rubric, str):
        if not rubric.strip():
            raise PromptError("rubric is empty")
        return rubric.strip()
    if isinstance(rubric, Mapping):
        missing = [k for k in (RUBRIC_KEYS[:1] if criteria_only else RUBRIC_KEYS) if not _text(rubric.get(k))]
        if missing:
            raise PromptError(f"rubric lacks {', '.join(missing)} (needs {', '.join(RUBRIC_KEYS)})")
        if criteria_only:
            return f"[{rubric['criteria'].strip()}]"
        return SCORE_RUBRIC_TEMPLATE.format(**{k: rubric[k].strip() for k in RUBRIC_KEYS})
    raise PromptError(f"rubric must be text or a mapping of {', '.join(RUBRIC_KEYS)}, got {type(rubric).__name__}")


def render_absolute(instruction: Any, response: Any, rubric: Any, reference_answer: Optional[Any] = None) -> str:
    fields = {"instruction": _required("instruction", instruction), "response": _required("response", response)}
    fields["rubric"] = format_rubric(rubric)
    if _text(reference_answer):
        return ABSOLUTE_PROMPT.format(reference_answer=reference_answer, **fields)
    return ABSOLUTE_PROMPT_WO_REF.format(**fields)


def render_relative(
    instruction: Any, response_a: Any, response_b: Any, rubric: Any, reference_answer: Optional[Any] = None
) -> str:
    fields = {
        "instruction": _required("instruction", instruction),
        "response_A": _required("response_a", response_a),
        "response_B": _required("response_b", response_b),
        "rubric": format_rubric(rubric, criteria_only=True),
    }
    if _text(reference_answer):
        return RELATIVE_PROMPT.format(reference_answer=reference_answer, **fields)
    return RELATIVE_PROMPT_WO_REF.format(**fields)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def _required(name: str, value: Any) -> str:
    if value is None:
        raise PromptError(f"{name} is missing")
    if not isinstance(value, str):
        raise PromptError(f"{name} is {type(value).__name__}, not text")
    if not value.strip():
        raise PromptError(f"{name} is empty")
    return value
