"""Retries, backoff and Retry-After, against a real HTTP server that fails on purpose."""

import asyncio
import time

import pytest

from jobs.client.http import ApiError, OpenAIClient, retry_after_s, status_reason
from jobs.judge.reasons import Reason
from tests.conftest import free_port


def post(client, body=None, path="completions"):
    async def go():
        try:
            return await client.post(path, body or {"model": "stub-judge", "prompt": "x", "max_tokens": 4})
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_transient_503s_are_retried_until_success(stub):
    stub.behaviour.fail_first = 2
    answer, _ = post(OpenAIClient(stub.url, max_retries=3, backoff_s=0.01))
    assert answer["choices"][0]["text"].startswith("Feedback:")
    assert stub.stats.requests == 3


def test_retry_after_is_honoured(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status, stub.behaviour.retry_after = 1, 429, "1"
    started = time.perf_counter()
    post(OpenAIClient(stub.url, max_retries=2, backoff_s=0.001))
    assert time.perf_counter() - started >= 0.95
    assert stub.stats.requests == 2


def test_retries_run_out_with_a_clear_error(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 100, 500
    with pytest.raises(ApiError) as err:
        post(OpenAIClient(stub.url, max_retries=2, backoff_s=0.001))
    assert err.value.attempts == 3 and err.value.status == 500 and err.value.retryable
    assert "after 3 attempts" in str(err.value) and "stub failure" in str(err.value)
    assert err.value.reason is Reason.JUDGE_ERROR
    assert stub.stats.requests == 3


def test_a_503_with_retry_after_waits_without_using_up_retries_until_patience_runs_out(stub):
    # The route while Serve replaces its only replica: "down; back in 1 s", for longer than the retries last.
    stub.behaviour.fail_first, stub.behaviour.fail_status, stub.behaviour.retry_after = 4, 503, "0"
    answer, _ = post(OpenAIClient(stub.url, max_retries=1, backoff_s=0.001, retry_after_max_s=0.05))
    assert answer["choices"] and stub.stats.requests == 5
    stub.behaviour.fail_first, stub.stats.requests = 1000, 0
    started = time.perf_counter()
    with pytest.raises(ApiError, match="HTTP 503") as err:  # ... but not for ever: patience bounds it
        post(OpenAIClient(stub.url, max_retries=1, backoff_s=0.001, retry_after_max_s=0.05, patience_s=0.5))
    assert 0.5 <= time.perf_counter() - started < 5 and err.value.reason is Reason.JUDGE_ERROR
    # Without Retry-After a 503 is a failure like a 500: the retries end it.
    stub.behaviour.retry_after, stub.stats.requests = None, 0
    with pytest.raises(ApiError, match="after 2 attempts"):
        post(OpenAIClient(stub.url, max_retries=1, backoff_s=0.001))
    assert stub.stats.requests == 2


def test_client_errors_are_not_retried(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 100, 400
    with pytest.raises(ApiError) as err:
        post(OpenAIClient(stub.url, max_retries=5, backoff_s=0.001))
    assert err.value.status == 400 and err.value.attempts == 1 and not err.value.retryable
    assert err.value.reason is Reason.JUDGE_REFUSED
    assert stub.stats.requests == 1


def test_timeouts_and_refused_connections_are_transient(stub):
    stub.behaviour.hang_s = 2
    started = time.perf_counter()
    with pytest.raises(ApiError, match="timed out") as err:
        post(OpenAIClient(stub.url, timeout_s=0.2, max_retries=1, backoff_s=0.001))
    assert err.value.attempts == 2 and time.perf_counter() - started < 2
    assert err.value.reason is Reason.JUDGE_TIMEOUT
    with pytest.raises(ApiError, match="could not reach") as err:
        post(OpenAIClient(f"http://127.0.0.1:{free_port()}/v1", max_retries=1, backoff_s=0.001))
    assert err.value.reason is Reason.JUDGE_UNREACHABLE


def test_garbage_is_an_error_not_a_crash(stub):
    stub.behaviour.garbage = True
    with pytest.raises(ApiError, match="invalid JSON") as err:
        post(OpenAIClient(stub.url, max_retries=1, backoff_s=0.001))
    assert err.value.reason is Reason.JUDGE_ERROR


def test_in_flight_bound_holds(stub):
    stub.behaviour.delay_s = 0.05
    client = OpenAIClient(stub.url, max_in_flight=3)

    async def go():
        await asyncio.gather(*(client.post("completions", {"model": "m", "prompt": "p"}) for _ in range(20)))
        await client.aclose()

    asyncio.run(go())
    assert stub.stats.requests == 20 and stub.stats.max_in_flight == 3


def test_retry_after_forms():
    assert retry_after_s("3") == 3.0
    assert retry_after_s(None) is None and retry_after_s("soon") is None
    assert 0 <= retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") <= 0.001


def test_status_reasons():
    assert status_reason(400) is status_reason(401) is status_reason(404) is Reason.JUDGE_REFUSED
    # Statuses that are retried are the judge's, also when the retries run out.
    assert status_reason(429) is status_reason(500) is status_reason(501) is Reason.JUDGE_ERROR


def test_a_prompt_the_judge_finds_too_long_is_coded_so(stub):
    """A server that counts the prompt past its context says so in the OpenAI error code; that row
    is `prompt_too_long`, like one judgefleet refuses itself, not a generic refusal."""
    from serve import wire

    assert status_reason(400, wire.CONTEXT_LENGTH_EXCEEDED) is Reason.PROMPT_TOO_LONG
    assert status_reason(400, "invalid_value") is Reason.JUDGE_REFUSED
    body = '{"error": {"message": "too long", "type": "invalid_request_error", "code": "context_length_exceeded"}}'
    assert wire.error_code(body) == wire.CONTEXT_LENGTH_EXCEEDED and wire.error_message(body) == "too long"
    assert wire.error_code("<html>") is None and wire.error_message("", "Bad Request") == "Bad Request"
