"""The judge protocol over HTTP: feedback, a constrained score token, and its distribution."""

import asyncio
import math

import pytest

from jobs.client.http import ApiError, OpenAIClient
from jobs.judge.modes import ABSOLUTE, RELATIVE
from jobs.judge.reasons import Reason
from jobs.judge.row_judge import JudgeSettings, RowJudge, sample_seed, score_distribution
from serve import wire


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
    assert ABSOLUTE.expected(probs) == pytest.approx(4.25)
    assert score_distribution({"x": -0.1}, ("A", "B")) is None
    assert RELATIVE.expected([0.3, 0.7]) == pytest.approx(0.3)


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
    assert row.errors and "no score in the judge's answer 'maybe'" in row.errors[0].message
    assert [e.reason for e in row.errors] == [Reason.UNPARSED_VERDICT] * 2
    assert row.errors[1].message.startswith("sample 2: ")


def test_chat_protocol_parses_text_verdicts(stub):
    stub.behaviour.chat_text = "Feedback: Clear and correct. [RESULT] 5"
    row = judge_one(stub, api="chat", num_samples=2, strict=True)
    assert [s.score for s in row.samples] == [5, 5]
    assert row.samples[0].feedback == "Clear and correct."
    stub.behaviour.chat_text = "I think it deserves a high mark."
    row = judge_one(stub, api="chat", num_samples=1)
    assert row.samples[0].score is None and "unparsed verdict: no verdict found" in row.errors[0].message
    assert row.errors[0].reason is Reason.UNPARSED_VERDICT


def test_failed_requests_and_hangs_end_as_row_errors(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 100, 503
    row = judge_one(stub, num_samples=2)
    assert [s.score for s in row.samples] == [None, None]
    assert "judge request failed" in row.errors[0].message and "HTTP 503" in row.errors[0].message
    assert [e.reason for e in row.errors] == [Reason.JUDGE_ERROR]  # one row error, no sample errors


def test_prompts_that_cannot_fit_are_not_sent(stub):
    stub.behaviour.max_model_len = 100
    row = judge_one(stub, prompt="word " * 200, max_model_len=100)
    assert "prompt too long: 251 tokens" in row.errors[0].message and "context is 100 tokens" in row.errors[0].message
    assert row.errors[0].reason is Reason.PROMPT_TOO_LONG
    assert stub.stats.by_path.get("/v1/completions", 0) == 0
    # A prompt that fits gets max_tokens cut to the room that is left.
    row = judge_one(stub, prompt="word " * 40, max_model_len=100, max_tokens=256)
    assert not row.errors
    assert stub.stats.bodies[0]["max_tokens"] == 100 - 51 - 8


def test_hangs_are_timeouts(stub):
    stub.behaviour.hang_s = 2
    s = JudgeSettings(model="stub-judge", num_samples=1)

    async def go():
        client = OpenAIClient(stub.url, max_retries=0, backoff_s=0.001, timeout_s=0.2)
        try:
            return await RowJudge(client, s).judge("###Feedback: ", "r1")
        finally:
            await client.aclose()

    row = asyncio.run(go())
    assert [e.reason for e in row.errors] == [Reason.JUDGE_TIMEOUT]


# -- the route's protocol, chosen by settings, not by what an answer carries --------------------
LINEAGE = {"backend": "llama.cpp", "model": "stub-judge", "member": "cpu-0", "replica": "r7", "model_sha256": "ab"}


class RecordingClient:
    """A client that answers from a script and records each request with its headers."""

    def __init__(self, lineage=LINEAGE, fail_score_step=False):
        self.lineage, self.fail_score_step = lineage, fail_score_step
        self.requests = []

    async def post(self, path, body, priority=0.0, headers=None):
        self.requests.append((path, body, headers))
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        if body.get("max_tokens") == 1:  # the verdict step
            if self.fail_score_step:
                raise ApiError("timed out (after 2 attempts)", reason=Reason.JUDGE_TIMEOUT)
            choices = [{"text": "3", "logprobs": {"top_logprobs": [{"3": 0.0}]}} for _ in prompts]
        else:
            choices = [{"text": "Feedback: fine ", "finish_reason": "stop"} for _ in range(body.get("n", 1))]
        answer = {"choices": choices, "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
        if self.lineage:
            wire.with_lineage(answer, wire.Lineage(**self.lineage))  # as the route answers
        return answer, {}


def judge_with(client, **settings):
    return asyncio.run(RowJudge(client, JudgeSettings(model="stub-judge", **settings)).judge("###Feedback: ", "r1"))


def test_route_gets_one_verdict_request_for_all_samples_preferring_the_member():
    client = RecordingClient()
    row = judge_with(client, num_samples=3, route=True)
    assert [s.score for s in row.samples] == [3, 3, 3] and not row.errors
    (_, feedback, _), (path, verdict, headers) = client.requests
    assert path == "completions" and len(verdict["prompt"]) == 3
    assert headers == wire.prefer_member("cpu-0")
    assert row.lineage == LINEAGE


def test_a_server_that_names_a_member_is_not_taken_for_the_route():
    client = RecordingClient()
    row = judge_with(client, num_samples=3)  # route=False: one verdict request per sample, no header
    assert [s.score for s in row.samples] == [3, 3, 3]
    verdicts = client.requests[1:]
    assert len(verdicts) == 3 and all(isinstance(b["prompt"], str) and h is None for _, b, h in verdicts)
    assert row.lineage["member"] == "cpu-0"  # lineage is still read


def test_route_without_a_member_sends_no_header():
    client = RecordingClient(lineage=None)
    row = judge_with(client, num_samples=2, route=True)
    assert client.requests[1][2] is None and row.lineage == {"backend": "openai-compatible"}


@pytest.mark.parametrize("route", [False, True])
def test_a_failed_verdict_step_keeps_feedback_and_the_reason(route):
    row = judge_with(RecordingClient(fail_score_step=True), num_samples=2, route=route)
    assert [s.score for s in row.samples] == [None, None] and [s.feedback for s in row.samples] == ["fine"] * 2
    assert [(e.reason, e.message) for e in row.errors] == [
        (Reason.JUDGE_TIMEOUT, f"sample {i}: score request failed: timed out (after 2 attempts)") for i in (1, 2)]


def test_settings_from_config_and_the_prompt_format():
    from jobs.config import load_config
    from tests.conftest import QUICKSTART

    cfg = load_config(QUICKSTART, ["judge.mode=relative", "judge.prompt_format=<s>{system}|{prompt}",
                                   "sampling.num_samples=2"])
    s = JudgeSettings.from_config(cfg, max_model_len=2048, route=True)
    assert (s.mode, s.num_samples, s.max_model_len, s.route) == ("relative", 2, 2048, True)
    assert s.system_prompt == RELATIVE.system_prompt and s.choices == ("A", "B")
    assert s.format_prompt("P") == f"<s>{RELATIVE.system_prompt}|P"
    cfg.judge.system_prompt = "Be fair."
    assert JudgeSettings.from_config(cfg).system_prompt == "Be fair."
