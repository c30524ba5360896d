"""A Retry-After is obeyed up to a cap (issue 11): a real HTTP stand-in asks for a day."""

import asyncio
import time

from jobs.client.http import RETRY_AFTER_MAX_S, OpenAIClient, retry_after_s


def post(client):
    async def go():
        try:
            # A hang here would be a day: fail fast instead.
            return await asyncio.wait_for(client.post("completions", {"model": "stub-judge", "prompt": "x"}), 20)
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_the_cap_is_a_named_bound_of_minutes_not_hours():
    assert 1 <= RETRY_AFTER_MAX_S <= 120
    assert retry_after_s("86400") == RETRY_AFTER_MAX_S
    assert retry_after_s("Fri, 31 Dec 2100 23:59:59 GMT") == RETRY_AFTER_MAX_S
    assert retry_after_s("86400", cap=2.0) == 2.0 and retry_after_s("1", cap=2.0) == 1.0
    assert retry_after_s("nan") is None and retry_after_s("-5") == 0.0


def test_a_429_asking_for_a_day_waits_only_the_cap(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status, stub.behaviour.retry_after = 1, 429, "86400"
    started = time.perf_counter()
    answer, _ = post(OpenAIClient(stub.url, max_retries=1, backoff_s=0.001, retry_after_max_s=0.3))
    assert answer["choices"] and stub.stats.requests == 2
    assert 0.25 <= time.perf_counter() - started < 5


def test_a_503_asking_for_a_day_in_an_http_date_waits_only_the_cap(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 2, 503
    stub.behaviour.retry_after = "Fri, 31 Dec 2100 23:59:59 GMT"
    started = time.perf_counter()
    answer, _ = post(OpenAIClient(stub.url, max_retries=3, backoff_s=0.001, retry_after_max_s=0.2))
    assert answer["choices"] and stub.stats.requests == 3
    assert 0.35 <= time.perf_counter() - started < 5
