"""The judge protocol over HTTP: feedback, a constrained score token, and its distribution."""

import asyncio
import math

import pytest

from jobs.client.http import OpenAIClient
from jobs.judge.row_judge import JudgeSettings, RowJudge, expected_value, sample_seed, score_distribution


def judge_one(stub, prompt="###Feedback: ", row_id="r1", **settings):
    s = JudgeSettings(model="stub-judge", **settings)

    async def go():
        client = OpenAIClient(stub.url, max_retries=1, backoff_s=0.001, timeout_s=5)
        try:
            return await RowJudge(client, s).judge(prompt, row_id)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_score_distribution_merges_token_variants_and_renormalises():
    top = {"4": math.log(0.5), " 4": math.log(0.1), "5": math.log(0.2), "hello": math.log(0.2)}
    probs = score_distribution(top, ("1", "2", "3", "4", "5"))
    assert probs == pytest.approx([0, 0, 0, 0.75, 0.25])
    assert expected_value(probs, "absolute") == pytest.approx(4.25)
    assert score_distribution({"x": -0.1}, ("A", "B")) is None
    assert expected_value([0.3, 0.7], "relative") == pytest.approx(0.3)


def test_completions_protocol_feedback_then_constrained_score(stub):
    row = judge_one(stub, num_samples=3, max_tokens=64)
    assert [s.score for s in row.samples] == [4, 4, 4]
    assert all(s.feedback == "The response is adequate." for s in row.samples)
    assert row.samples[0].expected == pytest.approx(0.3 / 4 * (1 + 2 + 3 + 5) + 0.7 * 4)
    assert not row.errors
    feedback_req, *score_reqs = stub.stats.bodies
    assert feedback_req["n"] == 3 and feedback_req["stop"] == ["[RESULT]"] and feedback_req["max_tokens"] == 64
    assert feedback_req["seed"] == sample_seed(0, "r1")
    assert len(score_reqs) == 3
    for req in score_reqs:
        assert req["max_tokens"] == 1 and req["temperature"] == 0
        assert req["structured_outputs"] == {"choice": ["1", "2", "3", "4", "5"]}
        assert req["prompt"].endswith("Feedback: The response is adequate. [RESULT] ")
    assert row.prompt_tokens > 0 and row.completion_tokens > 0
    assert row.lineage == {"backend": "openai-compatible"}


def test_endpoint_that_ignores_n_gets_one_request_per_sample(stub):
    stub.behaviour.ignore_n = True
    row = judge_one(stub, num_samples=3)
    assert [s.score for s in row.samples] == [4, 4, 4]
    feedback_reqs = [b for b in stub.stats.bodies if "structured_outputs" not in b]
    assert len(feedback_reqs) == 3
    seeds = [b["seed"] for b in feedback_reqs]
    assert seeds == [sample_seed(0, "r1") + i for i in range(3)]


def test_relative_mode_scores_letters(stub):
    stub.behaviour.score = "B"
    row = judge_one(stub, mode="relative", num_samples=2)
    assert [s.score for s in row.samples] == ["B", "B"]
    assert row.samples[0].expected == pytest.approx(0.3)  # P(A)
    assert stub.stats.bodies[-1]["structured_outputs"] == {"choice": ["A", "B"]}


def test_a_score_outside_the_choices_without_logprobs_is_a_sample_error(stub):
    stub.behaviour.score, stub.behaviour.logprobs = "maybe", False
    row = judge_one(stub, num_samples=2)
    assert [s.score for s in row.samples] == [None, None]
    assert row.errors and "no score in the judge's answer 'maybe'" in row.errors[0]


def test_chat_protocol_parses_text_verdicts(stub):
    stub.behaviour.chat_text = "Feedback: Clear and correct. [RESULT] 5"
    row = judge_one(stub, api="chat", num_samples=2, strict=True)
    assert [s.score for s in row.samples] == [5, 5]
    assert row.samples[0].feedback == "Clear and correct."
    stub.behaviour.chat_text = "I think it deserves a high mark."
    row = judge_one(stub, api="chat", num_samples=1)
    assert row.samples[0].score is None and "unparsed verdict: no verdict found" in row.errors[0]


def test_failed_requests_and_hangs_end_as_row_errors(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 100, 503
    row = judge_one(stub, num_samples=2)
    assert [s.score for s in row.samples] == [None, None]
    assert "judge request failed" in row.errors[0] and "HTTP 503" in row.errors[0]


def test_prompts_that_cannot_fit_are_not_sent(stub):
    stub.behaviour.max_model_len = 100
    row = judge_one(stub, prompt="word " * 200, max_model_len=100)
    assert "prompt too long: 251 tokens" in row.errors[0] and "context is 100 tokens" in row.errors[0]
    assert stub.stats.by_path.get("/v1/completions", 0) == 0
    # A prompt that fits gets max_tokens cut to the room that is left.
    row = judge_one(stub, prompt="word " * 40, max_model_len=100, max_tokens=256)
    assert not row.errors
    assert stub.stats.bodies[0]["max_tokens"] == 100 - 51 - 8
