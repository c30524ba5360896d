"""The pipeline's per-row work without Ray: prompts as read, refused rows, typed result columns."""

import asyncio

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.config import DatasetConfig
from jobs.judge.modes import JOB_MODES
from jobs.judge.reasons import Failure, Reason
from jobs.judge.row_judge import RowVerdict, SampleVerdict
from jobs.runtime.pipeline import (
    PROMPT, RENDER_ERROR, RESULT_COLUMNS, JudgeActor, prompt_columns, result_columns, result_schema,
)


def actor(judge=None, mode="absolute", num_samples=2):
    a = JudgeActor("http://unused/v1", None, {"model": "m", "mode": mode, "num_samples": num_samples}, 1, 1.0, 0, False)
    a._judge = judge
    return a


def test_schema_is_one_per_mode_with_reasons_beside_errors():
    # Modes of one prompt a row share their columns; modes of several add their own after feedbacks.
    names = [result_schema(m).names for m in ("absolute", "relative")]
    assert all(n == names[0] for n in names) and set(names[0]) <= set(RESULT_COLUMNS)
    for m in JOB_MODES:
        extra = [n for n in result_schema(m).names if n not in names[0]]
        assert [n for n in result_schema(m).names if n in names[0]] == names[0] and set(extra) <= set(RESULT_COLUMNS)
        assert extra == [n for n, _ in m.extra_fields()]
    assert names[0].index("error_reasons") == names[0].index("errors") + 1
    assert result_schema("absolute").field("scores").type == pa.list_(pa.int64())
    assert result_schema("relative").field("score").type == pa.string()


def test_prompts_are_rendered_as_read_or_say_why_not():
    d = DatasetConfig(path="unused")
    ok = prompt_columns({"instruction": "Q", "response": "R", "rubric": "[c]"}, d, "absolute")
    assert ok[PROMPT].startswith("###Task Description:") and ok[RENDER_ERROR] is None
    bad = prompt_columns({"instruction": "Q", "response_a": "R", "rubric": "[c]"}, d, "relative")
    assert bad == {PROMPT: None, RENDER_ERROR: "response_b is missing"}
    assert prompt_columns(None, d, "absolute") == {PROMPT: None, RENDER_ERROR: None}


def test_rows_not_sent_get_their_reason():
    class Broken:
        client = None  # nothing for the actor to close

        async def judge(self, prompt, row_id):
            raise KeyError("oops")

    a = actor(Broken())
    unreadable = asyncio.run(a._one("r1", None, "data.jsonl line 3: not valid JSON", None))
    bad = asyncio.run(a._one("r2", None, None, "response is missing"))
    internal = asyncio.run(a._one("r3", "a prompt", None, None))
    assert unreadable.errors == [Failure(Reason.UNREADABLE_ROW, "data.jsonl line 3: not valid JSON")]
    assert bad.errors == [Failure(Reason.BAD_ROW, "bad row: response is missing")]
    assert internal.errors == [Failure(Reason.INTERNAL_ERROR, "internal error: KeyError: 'oops'")]
    assert all(len(v.samples) == 2 and v.samples[0].score is None for v in (unreadable, bad, internal))


failures = st.lists(st.builds(Failure, st.sampled_from(list(Reason)), st.text(max_size=20)), max_size=4)
sample = st.builds(SampleVerdict, score=st.one_of(st.none(), st.integers(1, 5)),
                   error=st.one_of(st.none(), st.builds(Failure, st.sampled_from(list(Reason)), st.text(max_size=9))))
verdicts = st.lists(st.builds(RowVerdict, samples=st.lists(sample, min_size=1, max_size=3), errors=failures), max_size=8)


@settings(deadline=None)  # a shared CI machine is slow now and then
@given(verdicts)
def test_reasons_are_index_aligned_with_errors(rows):
    cols = result_columns(rows, actor().settings)
    errors, reasons = cols["errors"].to_pylist(), cols["error_reasons"].to_pylist()
    for v, messages, codes in zip(rows, errors, reasons):
        if not v.errors:
            assert messages is None and codes is None
        else:
            assert messages == [e.message for e in v.errors] and codes == [e.reason.value for e in v.errors]
            assert all(Reason(c) for c in codes)
