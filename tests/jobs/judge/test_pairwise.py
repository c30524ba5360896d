"""Pairwise grading: relative mode in both orders (`judge.swap`) and `pairwise_absolute`."""

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import config
from jobs.client.http import OpenAIClient
from jobs.errors import ConfigError
from jobs.judge import prompts
from jobs.judge.modes import (ABSOLUTE, PAIRWISE_ABSOLUTE, RELATIVE, SWAPPED_RELATIVE, consistent, flip, job_mode,
                              swap_aggregate)
from jobs.judge.prompts import PromptError
from jobs.judge.reasons import Reason
from jobs.judge.row_judge import JudgeSettings, RowJudge
from jobs.runtime.pipeline import MORE_PROMPTS, PROMPT, JudgeActor, prompt_columns, result_columns

REPO = Path(__file__).resolve().parents[3]
HHH = REPO.parent / "shared" / "data" / "prometheus" / "hhh_alignment_eval.json"
RUBRIC = "[Is it right?]"
ROW = {"instruction": "Q?", "response_a": "first answer", "response_b": "second answer", "rubric": RUBRIC,
       "chosen": "good answer", "rejected": "bad answer"}


def d(**overrides):
    return config.DatasetConfig(path="unused", **overrides)


def s(score=None, expected=None, probs=None, feedback=None):
    return SimpleNamespace(score=score, expected=expected, probs=probs, feedback=feedback)


# -- which mode a job runs in ---------------------------------------------------------------------
def test_swap_defaults_on_for_relative_only():
    assert job_mode("relative") is SWAPPED_RELATIVE and job_mode("relative", False) is RELATIVE
    assert job_mode("absolute") is ABSOLUTE and job_mode("pairwise_absolute") is PAIRWISE_ABSOLUTE
    assert SWAPPED_RELATIVE.name == "relative"  # summary and reports read it as relative mode
    with pytest.raises(ValueError, match="absolute mode has no A/B order to swap"):
        job_mode("absolute", True)


def test_config_resolves_and_validates_swap():
    cfg = config.JobConfig(dataset=config.DatasetConfig(path="x"))
    cfg.judge.mode = "relative"
    assert config.swap_of(cfg) is True
    cfg.dataset.prompt_field = "instruction"
    assert config.swap_of(cfg) is False  # whole prompts cannot be swapped
    cfg.judge.swap = True
    with pytest.raises(ConfigError, match="judge.swap: dataset.prompt_field"):
        config.validate(cfg)
    cfg.judge.mode, cfg.judge.swap, cfg.dataset.prompt_field = "absolute", True, None
    with pytest.raises(ConfigError, match="judge.swap: absolute mode"):
        config.validate(cfg)
    cfg.judge.mode, cfg.judge.swap, cfg.dataset.prompt_field = "pairwise_absolute", None, "chosen_instruction"
    with pytest.raises(ConfigError, match="dataset.rejected_prompt_field"):
        config.validate(cfg)


# -- prompts ------------------------------------------------------------------------------------
def test_swapped_relative_renders_both_orders_sharing_the_instruction():
    ab, ba = SWAPPED_RELATIVE.render_prompts(ROW, d())
    assert ab == prompts.render_relative("Q?", "first answer", "second answer", RUBRIC)
    assert ba == prompts.render_relative("Q?", "second answer", "first answer", RUBRIC)
    shared = ab.index("###Response A:")
    assert ab[:shared] == ba[:shared]  # the route prefills this once
    assert RELATIVE.render_prompts(ROW, d()) == [ab]
    with pytest.raises(PromptError, match="judge.swap needs"):
        SWAPPED_RELATIVE.render_prompts({"p": "x"}, d(prompt_field="p"))


def test_pairwise_absolute_renders_each_response_alone():
    chosen, rejected = PAIRWISE_ABSOLUTE.render_prompts(ROW, d(rubric="[R]\nScore 1: a\nScore 2: b"))
    assert chosen == prompts.render_absolute("Q?", "good answer", "[R]\nScore 1: a\nScore 2: b")
    assert rejected == prompts.render_absolute("Q?", "bad answer", "[R]\nScore 1: a\nScore 2: b")
    assert PAIRWISE_ABSOLUTE.required_columns(d()) == ["instruction", "chosen", "rejected", "rubric"]
    with pytest.raises(PromptError, match="rejected is missing"):
        PAIRWISE_ABSOLUTE.render_prompts({**ROW, "rejected": None}, d())


@pytest.mark.skipif(not HHH.is_file(), reason="needs ../shared/data/prometheus/hhh_alignment_eval.json")
def test_pairwise_absolute_takes_hhh_alignment_whole_prompts():
    rows = json.loads(HHH.read_text())
    data = d(prompt_field="chosen_instruction", rejected_prompt_field="rejected_instruction")
    assert PAIRWISE_ABSOLUTE.required_columns(data) == ["chosen_instruction", "rejected_instruction"]
    for row in rows[:20]:
        chosen, rejected = PAIRWISE_ABSOLUTE.render_prompts(row, data)
        assert chosen == row["chosen_instruction"] and rejected == row["rejected_instruction"]
        assert "###Response to evaluate:" in chosen and "[RESULT] (an integer number between 1 and 5)" in chosen
    out = prompt_columns(rows[0], data, PAIRWISE_ABSOLUTE)
    assert out[PROMPT] == rows[0]["chosen_instruction"]
    assert json.loads(out[MORE_PROMPTS]) == [rows[0]["rejected_instruction"]]


# -- combining a row's prompts -----------------------------------------------------------------
letters = st.lists(st.one_of(st.none(), st.sampled_from("AB")), min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(letters, letters)
def test_swap_aggregation_is_symmetric(first, second):
    """Exchanging a row's responses exchanges its two prompts; the verdict is then the same
    response, named by the other letter."""
    row = SWAPPED_RELATIVE.row_values([[s(x) for x in first], [s(x) for x in second]])
    exchanged = SWAPPED_RELATIVE.row_values([[s(x) for x in second], [s(x) for x in first]])
    assert exchanged["score"] == flip(row["score"])
    assert exchanged["consistent"] == row["consistent"]
    assert (exchanged["score_ab"], exchanged["score_ba"]) == (flip(row["score_ba"]), flip(row["score_ab"]))
    if row["consistent"] is False:  # an inconsistent pair is a tie
        assert row["score"] is None
    if row["score"] is not None:
        assert row["score_ab"] == row["score_ba"] == row["score"] and row["consistent"] is True


def test_swapped_verdicts_are_mapped_back_to_the_original_labels():
    first = [s("A", 0.8, [0.8, 0.2], "f1"), s("A", 0.6, [0.6, 0.4], "f2")]
    second = [s("B", 0.3, [0.3, 0.7], "g1"), s("B", 0.1, [0.1, 0.9], "g2")]  # swapped "B" is the original A
    row = SWAPPED_RELATIVE.row_values([first, second])
    assert row["scores"] == ["A", "A"] and row["scores_swapped"] == ["A", "A"]
    assert row["score_ab"] == row["score_ba"] == row["score"] == "A" and row["consistent"] is True
    assert row["score_expected"] == pytest.approx((0.8 + 0.6 + 0.7 + 0.9) / 4)
    assert row["score_probs_swapped"] == [[0.7, 0.3], [0.9, 0.1]]
    assert row["feedbacks"] == ["f1", "f2"] and row["feedbacks_swapped"] == ["g1", "g2"]
    # The judge always says "A": the first position wins in both orders, an inconsistent pair.
    biased = SWAPPED_RELATIVE.row_values([[s("A")], [s("A")]])
    assert (biased["score_ab"], biased["score_ba"], biased["score"], biased["consistent"]) == ("A", "B", None, False)
    assert swap_aggregate("A", None) is None and consistent("A", None) is None


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=1, max_size=4),
       st.lists(st.one_of(st.none(), st.integers(1, 5)), min_size=1, max_size=4))
def test_pairwise_absolute_verdict_follows_the_scores(chosen, rejected):
    row = PAIRWISE_ABSOLUTE.row_values([[s(x) for x in chosen], [s(x) for x in rejected]])
    a, b = ABSOLUTE.aggregate(chosen), ABSOLUTE.aggregate(rejected)
    assert (row["score_a"], row["score_b"]) == (a, b)
    assert row["scores"] == chosen and row["scores_b"] == rejected
    expected = None if a is None or b is None or a == b else "A" if a > b else "B"
    assert row["score"] == expected
    assert PAIRWISE_ABSOLUTE.row_value("A") == 1.0 and PAIRWISE_ABSOLUTE.row_value("B") == 0.0


def test_result_columns_of_a_swapped_row_are_typed():
    from jobs.judge.row_judge import RowVerdict, SampleVerdict

    v = RowVerdict(samples=[SampleVerdict("A", 0.7, [0.7, 0.3], "f")], more_samples=[[SampleVerdict("B", 0.2, [0.2, 0.8], "g")]])
    cols = result_columns([v], JudgeSettings(model="m", mode="relative", num_samples=1, swap=True))
    assert cols["score"].to_pylist() == ["A"] and cols["consistent"].to_pylist() == [True]
    assert cols["scores_swapped"].to_pylist() == [["A"]] and cols["feedbacks_swapped"].to_pylist() == [["g"]]
    plain = result_columns([RowVerdict(samples=[SampleVerdict("A")])], JudgeSettings(model="m", mode="relative", num_samples=1))
    assert "consistent" not in plain and plain["score"].to_pylist() == ["A"]


# -- the row judge against the stub -----------------------------------------------------------------
def judge_row(stub, prompts_, **kw):
    settings_ = JudgeSettings(model="stub-judge", **kw)

    async def go():
        client = OpenAIClient(stub.url, max_retries=1, backoff_s=0.001, timeout_s=5)
        try:
            return await RowJudge(client, settings_).judge_row(prompts_, "r1", list(settings_.job_mode.orders))
        finally:
            await client.aclose()

    return asyncio.run(go())


def prefers(text):
    """A stub judge that picks the response holding `text`, wherever it is shown."""
    def answer(prompt):
        a = prompt.split("###Response A:")[1].split("###Response B:")[0]
        return "A" if text in a else "B"
    return answer


@pytest.mark.parametrize("route", [False, True])
def test_both_orders_are_sent_for_a_row_and_mapped_back(stub, route):
    stub.behaviour.score_for = prefers("second answer")
    stub.behaviour.delay_s = 0.2  # both orders out at once: the feedback requests overlap
    if route:  # judgefleet's route: one verdict request per order, its samples' prompts as a list
        stub.behaviour.lineage = {"backend": "stub", "member": "m1", "replica": "r"}
    ab, ba = SWAPPED_RELATIVE.render_prompts(ROW, d())
    row = judge_row(stub, [ab, ba], mode="relative", swap=True, num_samples=2, route=route)
    assert row.lineage.get("member") == ("m1" if route else None)
    feedback = [b for b in stub.stats.bodies if "structured_outputs" not in b]
    assert sorted(b["prompt"] for b in feedback) == sorted([ab, ba])
    assert stub.stats.max_in_flight >= 2
    values = SWAPPED_RELATIVE.row_values(row.orders)
    assert [x.score for x in row.samples] == ["B", "B"] and [x.score for x in row.more_samples[0]] == ["A", "A"]
    assert values["scores_swapped"] == ["B", "B"] and values["score"] == "B" and values["consistent"] is True
    assert not row.errors and row.prompt_tokens > 0


def test_an_order_that_fails_is_named_in_the_error(stub):
    stub.behaviour.score, stub.behaviour.logprobs = "maybe", False
    ab, ba = SWAPPED_RELATIVE.render_prompts(ROW, d())
    row = judge_row(stub, [ab, ba], mode="relative", swap=True, num_samples=1)
    assert [e.message.split(":")[0] for e in row.errors] == ["AB", "BA"]
    assert {e.reason for e in row.errors} == {Reason.UNPARSED_VERDICT}


def test_pairwise_absolute_scores_each_response_on_the_absolute_scale(stub):
    stub.behaviour.score_for = lambda p: "5" if "good answer" in p else "2"
    chosen, rejected = PAIRWISE_ABSOLUTE.render_prompts(ROW, d())
    row = judge_row(stub, [chosen, rejected], mode="pairwise_absolute", num_samples=2)
    assert all(b["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}
               for b in stub.stats.bodies if "structured_outputs" in b)
    values = PAIRWISE_ABSOLUTE.row_values(row.orders)
    assert values["scores"] == [5, 5] and values["scores_b"] == [2, 2] and values["score"] == "A"
    assert JudgeSettings(model="m", mode="pairwise_absolute").choices == ABSOLUTE.choices


def test_refused_rows_have_samples_in_every_order():
    a = JudgeActor("http://unused/v1", None, {"model": "m", "mode": "relative", "swap": True, "num_samples": 2},
                   1, 1.0, 0, False)
    bad = asyncio.run(a._one("r", None, None, "response_b is missing"))
    assert len(bad.orders) == 2 and all(len(o) == 2 for o in bad.orders)
    cols = result_columns([bad], a.settings)
    assert cols["score"].to_pylist() == [None] and cols["consistent"].to_pylist() == [None]


def test_summary_counts_position_consistency_of_swapped_rows():
    import pyarrow as pa

    from jobs.data.summary import SummaryBuilder
    from jobs.judge.row_judge import RowVerdict, SampleVerdict

    settings_ = JudgeSettings(model="m", mode="relative", num_samples=1, swap=True)
    verdicts = [RowVerdict(samples=[SampleVerdict(a)], more_samples=[[SampleVerdict(b)]])
                for a, b in (("A", "B"), ("A", "A"), ("B", "A"), (None, None))]
    cols = result_columns(verdicts, settings_)
    summary = SummaryBuilder("relative")
    summary.add(pa.table(cols))
    out = summary.result(1.0)
    assert cols["consistent"].to_pylist() == [True, False, True, None]
    assert out["position_consistency"] == pytest.approx(2 / 3, abs=1e-4) and out["scored"] == 2
    assert out["samples"] == 8 and out["samples_scored"] == 6  # both orders' samples
    plain = SummaryBuilder("absolute")
    plain.add(pa.table(result_columns([RowVerdict(samples=[SampleVerdict(4)])], JudgeSettings(model="m", num_samples=1))))
    assert "position_consistency" not in plain.result(1.0)


def test_the_fingerprint_records_swap_as_it_applies():
    """Outputs made before judge.swap existed resume unless their verdicts would now differ."""
    from jobs.data.resume import fingerprint

    cfg = config.JobConfig(dataset=config.DatasetConfig(path="x"))
    cfg.judge.url = "http://judge/v1"
    absolute = fingerprint(cfg)
    assert not {"judge.swap", "dataset.chosen_field", "dataset.rejected_field", "dataset.rejected_prompt_field"} & set(absolute)
    cfg.judge.mode = "relative"
    assert fingerprint(cfg)["judge.swap"] is True  # unset: both orders, unlike relative outputs made before
    cfg.judge.swap = False
    assert "judge.swap" not in fingerprint(cfg)
