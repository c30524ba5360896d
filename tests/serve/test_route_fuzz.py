"""Fuzzing the real route (issue 11): generated completions and chat requests - valid, nearly
valid and hostile - over real HTTP to real Ray Serve with a real llama.cpp replica of the bundled
judge. Properties: no 5xx, every 4xx OpenAI-shaped, every valid request answered, every answer
within a time bound, no work left in the engine, and a good request as fast after as before.

This is the fixed-seed CI slice (well under a minute); `python -m benchmarks.route_fuzz` runs the
long campaign over the same generators (tests/serve/fuzz_requests.py)."""

from __future__ import annotations

import statistics
import time

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings

from serve import wire
from tests.serve.fuzz_requests import MODEL, FuzzRequest, extremes, problems, requests

pytestmark = pytest.mark.integration

TIME_BOUND_S = 30.0  # any one answer, on 2 shared cores
GOOD = {"model": MODEL, "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def route(judge_route):
    url, _ = judge_route
    with httpx.Client(base_url=url[: -len("/v1")], timeout=TIME_BOUND_S * 2) as client:
        yield client


def send(client: httpx.Client, request: FuzzRequest):
    started = time.perf_counter()
    response = client.post(request.path, content=request.body, headers={"content-type": "application/json"})
    return response.status_code, response.content, time.perf_counter() - started


def good_latency(client: httpx.Client) -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        assert client.post("/v1/completions", json=GOOD).status_code == 200
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_idle(client: httpx.Client) -> dict:
    """Wait until the replica has no request running or waiting; its last statistics."""
    stats = {}
    for _ in range(40):
        (member,) = wire.parse_pools(client.get(wire.POOLS_PATH).json())[MODEL]
        stats = member.engine_stats or {}
        if stats and stats.get("busy_slots") == 0 and stats.get("waiting_requests") == 0 and member.outstanding == 0:
            return stats
        time.sleep(0.25)
    raise AssertionError(f"work left in the engine after the campaign: {stats}")


def test_a_fixed_seed_campaign_finds_no_5xx_no_misshapen_4xx_and_leaves_the_route_as_fast(route):
    route.post("/v1/completions", json=GOOD)  # warm: the first decode of a replica is slow
    before = good_latency(route)
    seen = []
    for request in extremes():  # the most hostile of each shape, whatever hypothesis draws
        status, payload, elapsed = send(route, request)
        assert not problems(request, status, payload, elapsed, TIME_BOUND_S), (request, status, payload[:300])

    @seed(20261129)
    @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
              suppress_health_check=list(HealthCheck))
    @given(requests(max_tokens=4, max_body=5 << 20))
    def campaign(request: FuzzRequest):
        status, payload, elapsed = send(route, request)
        seen.append((request.kind, status))
        assert not problems(request, status, payload, elapsed, TIME_BOUND_S), (request, status, payload[:300])

    campaign()
    engine_idle(route)
    after = good_latency(route)
    kinds = {kind for kind, _ in seen}
    assert kinds == {"valid", "nearly", "hostile", "chat"}, kinds
    assert any(status == 200 for _, status in seen) and any(400 <= status < 500 for _, status in seen)
    assert after <= 2 * before + 0.25, (before, after)
