"""Hostile input at the router (issue 11), with fake members and a real HTTP stand-in upstream:
every field has a bounded cost, client mistakes are 4xx, faults are 500s with an id and no
internals, fields the route does not handle are refused, Retry-After is capped, readiness waits
for a member that can answer, and a member scaled to zero is woken. No Ray, no engine."""

from __future__ import annotations

import asyncio
import json
import logging
import time

import pytest

from serve import openai as oa
from serve import wire
from serve.members import MemberSpec, UpstreamSettings, pool_member
from serve.pool import Member
from serve.router import Router
from tests.serve.fakes import MODEL, FakeMember, answered_by, body, member, router


def run(coro):
    return asyncio.run(coro)


def assert_openai_4xx(reply, status=400, param=None, words=None):
    assert reply.status == status, reply.body
    error = reply.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] and error["message"]
    if param is not None:
        assert (error["param"] or "").startswith(param), error
    if words is not None:
        assert words in error["message"], error["message"]


def post(route, raw: bytes, path="/v1/completions"):
    return run(route.handle("POST", path, {}, raw))


def chat(**fields) -> bytes:
    return json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **fields}).encode()


# -- 1. every field has a bounded cost ------------------------------------------------------------
BOUNDS = [
    # (the body's extra fields, the field the 400 names)
    ({"prompt": ["p"] * (oa.MAX_PROMPTS + 1)}, "prompt"),
    ({"prompt": [[5] * 3] * (oa.MAX_PROMPTS + 1)}, "prompt"),
    ({"stop": ["s"] * (oa.MAX_STOPS + 1)}, "stop"),
    ({"stop": "s" * (oa.MAX_STOP_CHARS + 1)}, "stop.0"),
    ({"logit_bias": {str(i): 1 for i in range(oa.MAX_LOGIT_BIAS + 1)}}, "logit_bias"),
    ({"logit_bias": {"1" * 5000: 1}}, "logit_bias"),  # was a 500: int() of 5,000 digits
    ({"logit_bias": {"-4": 1}}, "logit_bias"),
    ({"structured_outputs": {"choice": [str(i) for i in range(oa.MAX_CHOICES + 1)]}}, "structured_outputs.choice"),
    ({"structured_outputs": {"choice": ["x" * (oa.MAX_CHOICE_CHARS + 1)]}}, "structured_outputs.choice.0"),
    ({"n": oa.MAX_N + 1}, "n"),
    ({"n": 2, "prompt": ["p"] * 33}, "n"),  # 66 samples in one request
    ({"logprobs": oa.MAX_LOGPROBS + 1}, "logprobs"),
    ({"seed": 1 << 64}, "seed"),
    ({"seed": -(1 << 63) - 1}, "seed"),
    ({"top_k": oa.MAX_TOP_K + 1}, "top_k"),  # was a 500 in llama.cpp's sampler (a C int)
    ({"temperature": 2.5}, "temperature"),
    ({"presence_penalty": 1e300}, "presence_penalty"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 2048}, "max_tokens"),  # the fake pool's context is 2048
    ({"prompt": [1] * 2048}, "prompt"),  # token ids past the context
    ({"prompt": [[1, -1]]}, "prompt.0"),  # a token id below 0
    ({"prompt": "x" * (2048 * oa.MAX_CHARS_PER_TOKEN + 1)}, "prompt"),  # cannot fit: refused untokenized
    ({"model": "m" * (oa.MAX_NAME_CHARS + 1)}, "model"),
    ({"user": "u" * (oa.MAX_NAME_CHARS + 1)}, "user"),
    ({"max_tokens": "16"}, "max_tokens"),  # strict types: every engine reads the body alike
    ({"temperature": True}, "temperature"),
]


@pytest.mark.parametrize("fields, param", BOUNDS, ids=[p + str(i) for i, (_, p) in enumerate(BOUNDS)])
def test_every_field_past_its_bound_is_a_400_naming_it_and_reaches_no_member(fields, param):
    a = FakeMember("a")
    route = router(member(a))
    raw = json.dumps({"model": MODEL, "prompt": "Hello", "max_tokens": 4, **fields}).encode()
    if "model" in fields:
        reply = post(route, raw)
        assert reply.status in (400, 404) and reply.body["error"]["type"]
        assert len(reply.body["error"]["message"]) < 400  # a long id is not echoed whole
    else:
        assert_openai_4xx(post(route, raw), 400, param)
    assert not a.calls


@pytest.mark.parametrize("fields, param", [
    ({"messages": [{"role": "user", "content": "x"}] * (oa.MAX_MESSAGES + 1)}, "messages"),
    ({"messages": [{"role": "user", "content": "x" * (2048 * oa.MAX_CHARS_PER_TOKEN + 1)}]}, "messages"),
    ({"max_completion_tokens": 4096}, "max_completion_tokens"),
    ({"top_logprobs": oa.MAX_LOGPROBS + 1}, "top_logprobs"),
    ({"messages": [{"role": "user", "content": "x", "name": "n" * 300}]}, "messages.0.name"),
])
def test_chat_fields_past_their_bounds_are_400s(fields, param):
    a = FakeMember("a")
    assert_openai_4xx(post(router(member(a)), chat(**fields), "/v1/chat/completions"), 400, param)
    assert not a.calls


def test_a_text_that_could_fit_the_context_passes_and_so_do_token_id_prompts():
    a = FakeMember("a")
    route = router(member(a))
    assert post(route, body(prompt="x" * 2048 * 4)).status == 200
    assert post(route, body(prompt=[2, 651, 6037])).status == 200
    assert post(route, body(prompt=[[2, 651], [2, 6037]], max_tokens=2047)).status == 200
    assert len(a.calls) == 3


@pytest.mark.parametrize("raw, words", [
    (b"[" * 200_000 + b"]" * 200_000, "not valid JSON"),  # was an uncaught RecursionError
    (b'{"model": "judge", "prompt": "x", "temperature": NaN}', "not valid JSON"),
    (b'{"model": "judge", "prompt": "x", "seed": Infinity}', "not valid JSON"),
    (b'{"model": "judge", "prompt": "\\ud800"}', "surrogate"),  # no tokenizer can encode it
    (b'{"model": "judge", "prompt": "\xff\xfe"}', "not valid JSON"),
    (b'{"model": "judge", "prompt": "x", "extra": ' + b"[" * 500 + b"]" * 500 + b"}", "extra"),
])
def test_hostile_json_is_a_400(raw, words):
    a = FakeMember("a")
    assert_openai_4xx(post(router(member(a)), raw), 400, words=words)
    assert not a.calls


def test_a_body_past_the_byte_bound_is_413_at_the_router():
    a = FakeMember("a")
    raw = body(prompt="x" * oa.MAX_BODY_BYTES)
    assert_openai_4xx(post(router(member(a)), raw), 413, words=str(oa.MAX_BODY_BYTES))
    assert not a.calls


# -- 3. client mistakes are 4xx; faults are 500s with an id and no internals ---------------------------
def test_a_member_bug_is_a_500_with_an_error_id_that_the_log_names_and_no_internals(caplog):
    a = FakeMember("a")
    a.failure = KeyError("/srv/secret/path")
    with caplog.at_level(logging.ERROR, logger="serve.router"):
        reply = post(router(member(a)), body())
    assert reply.status == 500
    error = reply.body["error"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"
    assert "KeyError" not in error["message"] and "secret" not in error["message"]
    error_id = error["message"].split()[2].rstrip(";")
    assert len(error_id) == 16 and any(error_id in r.getMessage() for r in caplog.records)
    assert any(r.exc_info for r in caplog.records)  # the traceback is in the log


def test_a_fault_anywhere_in_the_route_is_an_openai_shaped_500():
    class Broken(FakeMember):
        async def call(self, method, body):
            return {"no": "status"}  # a malformed member reply: the router itself fails on it

    reply = post(router(member(Broken("a"))), body())
    assert reply.status == 500 and reply.body["error"]["code"] == "internal_error"
    assert "KeyError" not in reply.body["error"]["message"]


# -- 4. fields the route does not handle are refused, for every engine --------------------------------
@pytest.mark.parametrize("fields, param", [
    ({"tools": [{"type": "function"}]}, "tools"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"structured_outputs": {"regex": "[0-9]"}}, "structured_outputs.regex"),
    ({"min_p": 0.1}, "min_p"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
])
def test_unknown_fields_are_refused_naming_them(fields, param):
    a = FakeMember("a")
    reply = post(router(member(a)), body(**fields))
    assert_openai_4xx(reply, 400, param)
    assert not a.calls


def upstream_route(stub, **upstream_kwargs):
    spec = MemberSpec(stub.behaviour.model, "remote", "openai", None, max_ongoing=4, max_queued=0, replicas=1,
                      context_length=4096, upstream=UpstreamSettings(stub.url))
    remote = pool_member(spec)
    for key, value in upstream_kwargs.items():
        setattr(remote.client, key, value)
    return Router({stub.behaviour.model: [remote]}, None, retry_after_s=1), remote


def stub_body(**fields) -> bytes:
    return json.dumps({"model": "stub-judge", "prompt": "Hello", "max_tokens": 4, **fields}).encode()


def test_stream_to_a_pool_with_an_external_member_is_a_400_and_the_member_stays_up(stub):
    stub.behaviour.stream_sse = True  # a real OpenAI server streams when asked
    route, remote = upstream_route(stub)

    async def scenario():
        try:
            refused = await route.handle("POST", "/v1/completions", {}, stub_body(stream=True))
            good = await route.handle("POST", "/v1/completions", {}, stub_body())
            return refused, good
        finally:
            await remote.client._http.close() if remote.client._http else None

    refused, good = run(scenario())
    assert_openai_4xx(refused, 400, "stream")
    assert good.status == 200 and remote.failed == 0
    assert all(not b.get("stream") for b in stub.stats.bodies)


def test_an_upstreams_own_error_shape_reaches_the_client_in_openais(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 1, 422  # the stub's body is OpenAI's; {"detail"} too:
    route, remote = upstream_route(stub)

    async def scenario():
        try:
            return await route.handle("POST", "/v1/completions", {}, stub_body())
        finally:
            await remote.client._http.close()

    assert_openai_4xx(run(scenario()), 422, words="stub failure")
    from serve.upstream import _openai_error

    assert _openai_error(400, {"detail": "bad n"}, b"")["error"]["message"].endswith("bad n")
    assert _openai_error(400, None, b"<html>nope</html>")["error"]["type"] == "invalid_request_error"


# -- 5. a Retry-After from an external judge is obeyed up to a cap ------------------------------------
def test_an_upstreams_retry_after_pauses_it_only_up_to_the_cap(stub):
    from serve.upstream import RETRY_AFTER_MAX_S

    assert 0 < RETRY_AFTER_MAX_S <= 120
    stub.behaviour.fail_first, stub.behaviour.fail_status, stub.behaviour.retry_after = 1, 429, "86400"
    route, remote = upstream_route(stub, retry_after_max_s=0.5)

    async def scenario():
        try:
            first = await route.handle("POST", "/v1/completions", {}, stub_body())
            paused = await route.handle("POST", "/v1/completions", {}, stub_body())
            asked = stub.stats.requests
            await asyncio.sleep(0.6)
            after = await route.handle("POST", "/v1/completions", {}, stub_body())
            return first, paused, asked, after
        finally:
            await remote.client._http.close()

    first, paused, asked, after = run(scenario())
    assert first.status == 429 and int(first.headers["Retry-After"]) <= 1  # the cap, not a day
    assert paused.status == 429 and asked == 1  # obeyed: not asked again at once
    assert after.status == 200 and stub.stats.requests == 2  # and asked again once the cap passed
    assert remote.failed == 0  # busy is not broken


def test_an_http_date_retry_after_is_capped_too(stub):
    stub.behaviour.fail_first, stub.behaviour.fail_status = 1, 503
    stub.behaviour.retry_after = "Fri, 31 Dec 2100 23:59:59 GMT"
    route, remote = upstream_route(stub, retry_after_max_s=0.2)

    async def scenario():
        try:
            first = await route.handle("POST", "/v1/completions", {}, stub_body())
            return first, remote.down_until - time.monotonic()
        finally:
            await remote.client._http.close()

    first, down_for = run(scenario())
    assert first.status == 503 and down_for <= route.pools["stub-judge"].down_s + 0.1


# -- 6. readiness: /health waits for a member that can answer; /live does not -------------------------
def test_health_is_503_until_every_pool_has_a_member_that_can_answer_and_live_is_always_200():
    a, b = FakeMember("a"), FakeMember("b", model_id="other")
    ma, mb = member(a), member(b)
    ma.reported = mb.reported = False  # deployments whose replicas Serve's controller has not reported
    route = Router({MODEL: [ma], "other": [mb]}, api_key="key", retry_after_s=2)
    health = run(route.handle("GET", wire.HEALTH_PATH, {}, b""))
    assert health.status == 503 and health.body["waiting"] == [MODEL, "other"] and health.headers["Retry-After"] == "2"
    assert run(route.handle("GET", wire.LIVE_PATH, {}, b"")).status == 200  # no key needed either
    route.pools[MODEL].set_replicas(ma, 1)
    route.pools["other"].set_replicas(mb, 0)  # reported, but no replica running
    health = run(route.handle("GET", wire.HEALTH_PATH, {}, b""))
    assert health.status == 503 and health.body["waiting"] == ["other"]
    route.pools["other"].set_replicas(mb, 2)
    assert run(route.handle("GET", wire.HEALTH_PATH, {}, b"")).body == wire.health_json([MODEL, "other"])


def test_a_deployment_member_starts_unreported_and_an_external_one_reported(stub):
    common = dict(max_ongoing=4, max_queued=0, replicas=1, context_length=2048)
    deployed = pool_member(MemberSpec(MODEL, "d", "llama.cpp", "d-deploy", app=object(), **common))
    external = pool_member(MemberSpec(MODEL, "e", "openai", None, upstream=UpstreamSettings(stub.url), **common))
    assert not deployed.reported and external.reported


# -- 7. a member scaled to zero is woken when no running member can take the request ------------------
def cold_member(fake: FakeMember, **bounds) -> Member:
    m = member(fake, **bounds)
    m.scales_to_zero = True
    m.replicas = 0
    return m


def test_a_member_scaled_to_zero_takes_a_request_when_it_is_the_only_one():
    a = FakeMember("a")
    route = router(cold_member(a, max_queued=2))
    reply = post(route, body())
    assert reply.status == 200 and answered_by(reply) == "a"  # Serve queues it while a replica starts
    assert run(route.handle("GET", wire.HEALTH_PATH, {}, b"")).status == 200
    (state,) = wire.parse_pools(run(route.handle("GET", wire.POOLS_PATH, {}, b"")).body)[MODEL]
    assert state.cold and state.up


def test_a_cold_member_is_the_last_resort_after_running_members():
    warm, cold = FakeMember("warm"), FakeMember("cold")
    mwarm, mcold = member(warm, max_ongoing=1), cold_member(cold, max_queued=0)
    route = router(mwarm, mcold)
    assert answered_by(post(route, body())) == "warm"
    mwarm.outstanding = 1  # warm is at its bound
    assert answered_by(post(route, body())) == "cold"
    mcold.outstanding = 1  # a cold member with no queue takes one request: the one that wakes it
    assert post(route, body()).status == 429


def test_a_member_that_cannot_scale_to_zero_and_has_no_replica_is_still_down():
    a = FakeMember("a")
    m = member(a)
    m.replicas = 0
    assert post(router(m), body()).status == 503 and not a.calls


def test_autoscaling_min_replicas_0_makes_a_member_that_scales_to_zero():
    from serve.config import AutoscalingConfig, ModelConfig
    from serve.members import member_spec

    spec = member_spec(ModelConfig(autoscaling=AutoscalingConfig(min_replicas=0, max_replicas=2)), "llamacpp-0")
    assert spec.scales_to_zero
    assert not member_spec(ModelConfig(), "llamacpp-0").scales_to_zero


# -- 8. the fuzz generators against the router alone (the live campaign: test_route_fuzz.py) -------------
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402

from tests.serve.fuzz_requests import FuzzRequest, extremes, problems, requests  # noqa: E402


@pytest.mark.parametrize("request_", extremes(), ids=lambda r: r.what)
def test_the_most_hostile_request_of_each_shape_is_an_openai_shaped_4xx_at_once(request_: FuzzRequest):
    fake = FakeMember("a", model_id="gemma3-270m")
    route = Router({"gemma3-270m": [member(fake)]}, None, retry_after_s=1)
    started = time.perf_counter()
    reply = run(route.handle("POST", request_.path, {}, request_.body))
    elapsed = time.perf_counter() - started
    engine_only = ("past the vocabulary",)  # only the engine knows its vocabulary
    if request_.what.endswith(engine_only):
        assert reply.status == 200 and fake.calls
    else:
        assert 400 <= reply.status < 500 and not fake.calls, (reply.status, reply.body)
    assert not problems(request_, reply.status, reply.payload(), elapsed, 2.0)


@seed(11)
@settings(max_examples=150, deadline=None, database=None, phases=[Phase.generate, Phase.shrink],
          suppress_health_check=list(HealthCheck))
@given(requests(max_body=5 << 20))
def test_no_generated_request_makes_the_router_answer_5xx_or_a_misshapen_4xx(request: FuzzRequest):
    fake = FakeMember("a", model_id="gemma3-270m")
    route = Router({"gemma3-270m": [member(fake)]}, None, retry_after_s=1)
    started = time.perf_counter()
    reply = run(route.handle("POST", request.path, {}, request.body))
    found = problems(request, reply.status, reply.payload(), time.perf_counter() - started, 5.0)
    # Fakes answer what only an engine refuses (token ids past its vocabulary, n past its slots).
    found = [p for p in found if "answered 200" not in p]
    assert not found, (request, reply.status, reply.body)


def test_pools_and_cards_do_not_wake_a_member_scaled_to_zero():
    """Only a completion may wake it: a probe or a client listing models must not start a replica."""
    class Counting(FakeMember):
        asked = 0

        async def card(self):
            Counting.asked += 1
            return await super().card()

        async def stats(self):
            Counting.asked += 1
            return await super().stats()

    route = router(cold_member(Counting("a")))
    assert run(route.handle("GET", wire.POOLS_PATH, {}, b"")).status == 200
    (card,) = run(route.handle("GET", wire.MODELS_PATH, {}, b"")).body["data"]
    assert wire.is_route_card(card) and wire.max_model_len(card) == 2048  # from its configuration
    assert run(route.handle("GET", wire.HEALTH_PATH, {}, b"")).status == 200
    assert Counting.asked == 0
