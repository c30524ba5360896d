"""Hostile input against the deployed route (issue 11): real Ray Serve (proxy front), real
llama.cpp, real HTTP. A refused batch and a client that disconnects leave no work in the engine;
a body past the bound is refused by the front; a member scaled to zero is woken by a request."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from serve import openai as oa
from serve import wire
from tests.conftest import QUICKSTART, free_port

pytestmark = pytest.mark.integration

MODEL = "gemma3-270m"
EOS = "1"  # Gemma's end-of-turn id: banned below, so an answer runs to max_tokens


def root(judge_route) -> str:
    return judge_route[0][: -len("/v1")]


def engine(base: str) -> dict:
    (member,) = wire.parse_pools(httpx.get(base + wire.POOLS_PATH, timeout=30).json())[MODEL]
    return dict(member.engine_stats or {}, outstanding=member.outstanding)


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def busy(stats: dict) -> int:
    return stats.get("busy_slots", 0) + stats.get("waiting_requests", 0)


def test_probes_live_and_ready(judge_route):
    base = root(judge_route)
    assert httpx.get(base + wire.LIVE_PATH).status_code == 200
    health = httpx.get(base + wire.HEALTH_PATH)
    assert health.status_code == 200 and health.json() == wire.health_json([MODEL])


def test_a_refused_batch_leaves_no_prompt_generating(judge_route):
    base = root(judge_route)
    wait_for(lambda: busy(engine(base)) == 0, 30, "an idle engine to start from")
    body = {"model": MODEL, "prompt": ["Once upon a time", "word " * 2100], "max_tokens": 600,
            "temperature": 1.0, "logit_bias": {EOS: -100}}
    response = httpx.post(base + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 400 and response.json()["error"]["code"] == wire.CONTEXT_LENGTH_EXCEEDED
    stats = engine(base)
    assert busy(stats) == 0, stats  # the first prompt was never started (it used to run 600 tokens)


def test_a_client_that_disconnects_frees_its_sequences_at_once(judge_route):
    base = root(judge_route)
    wait_for(lambda: busy(engine(base)) == 0, 30, "an idle engine to start from")
    host, port = base.split("//")[1].split(":")
    payload = json.dumps({"model": MODEL, "prompt": ["Once upon a time", "In a land far away"], "n": 2,
                          "max_tokens": 1500, "temperature": 1.0, "logit_bias": {EOS: -100}}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
    wait_for(lambda: engine(base).get("busy_slots", 0) == 4, 30, "both prompts x 2 samples decoding")
    sock.close()
    started = time.monotonic()
    wait_for(lambda: busy(engine(base)) == 0, 10, "the engine freed after the client left")
    assert time.monotonic() - started < 10
    good = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2}, timeout=60)
    assert good.status_code == 200


def test_the_proxy_front_refuses_a_body_past_the_bound_quickly(judge_route):
    base = root(judge_route)
    big = b'{"model": "%s", "prompt": "' % MODEL.encode() + b"x" * (oa.MAX_BODY_BYTES + 1) + b'"}'
    started = time.monotonic()
    response = httpx.post(base + "/v1/completions", content=big, headers={"content-type": "application/json"},
                          timeout=60)
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert time.monotonic() - started < 10


def test_unknown_fields_and_stream_are_refused_by_the_deployed_route(judge_route):
    base = root(judge_route)
    for extra, field in (({"tools": []}, "tools"), ({"stream": True}, "stream"), ({"min_p": 0.1}, "min_p")):
        response = httpx.post(base + "/v1/completions", json={"model": MODEL, "prompt": "x", **extra}, timeout=60)
        assert response.status_code == 400 and response.json()["error"]["param"] == field


def test_a_member_scaled_to_zero_is_woken_by_a_request(ray_session, bundled_model):
    """autoscaling min_replicas 0: Serve starts it with no replica. The router used to count it
    down and answer 503 forever; now a request goes to it and Serve starts a replica for it."""
    from jobs.config import load_config
    from serve.endpoint import JudgeEndpoint

    cfg = load_config(QUICKSTART, [f"serve.port={free_port()}", "serve.front=direct", "serve.models.0.context_length=512",
                                   "serve.models.0.parallel=4", "serve.models.0.cache_slots=0",
                                   "serve.models.0.autoscaling={min_replicas: 0, max_replicas: 1}"])
    with JudgeEndpoint(cfg.serve, cfg.judge.model, app_name="zero") as endpoint:
        base = endpoint.url[: -len("/v1")]

        def member():
            return wire.parse_pools(httpx.get(base + wire.POOLS_PATH, timeout=30).json())[MODEL][0]

        # The ingress learns replica counts from Serve's controller about once a second.
        cold = wait_for(lambda: (lambda m: m if m.replicas == 0 and m.cold else None)(member()), 10, "a cold member")
        assert cold.up and not cold.down
        assert httpx.get(base + wire.HEALTH_PATH).status_code == 200  # a request can wake it: ready
        response = httpx.post(endpoint.url + "/completions", json={"model": MODEL, "prompt": "Hi", "max_tokens": 2},
                              timeout=300)
        assert response.status_code == 200, response.text
        wait_for(lambda: member().replicas == 1 and not member().cold, 10, "the member woken with a replica")
