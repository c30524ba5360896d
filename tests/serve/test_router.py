"""The router with fake members: no Ray, no HTTP, no engine - the routing rules and the answers."""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serve import wire
from serve.errors import MemberFull, MemberGone
from tests.serve.fakes import MODEL, FakeMember, answered_by, body, complete, member, router


def run(coro):
    return asyncio.run(coro)


def two_members(**bounds):
    a, b = FakeMember("a"), FakeMember("b")
    ma, mb = member(a, **bounds), member(b, **bounds)
    return router(ma, mb), (a, ma), (b, mb)


def assert_openai_error(reply, status, words, code=None):
    assert reply.status == status
    error = reply.body["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"]
    assert words in error["message"], error["message"]
    if code is not None:
        assert error["code"] == code


# -- which member answers -----------------------------------------------------------------------
def test_the_member_with_most_spare_capacity_answers():
    big, small = FakeMember("big"), FakeMember("small")
    mbig, msmall = member(big, max_ongoing=8), member(small, max_ongoing=2)
    route = router(mbig, msmall)
    mbig.outstanding = 6  # 25% free, against 100%
    assert answered_by(run(complete(route))) == "small"
    msmall.outstanding = 2  # 0% free: the big one, though it has fewer free slots than before
    assert answered_by(run(complete(route))) == "big"


def test_a_preferred_member_answers_when_it_has_room_and_others_when_not():
    route, (a, ma), (b, mb) = two_members(max_ongoing=4, max_queued=1)
    mb.outstanding = 3  # a has more spare capacity ...
    assert answered_by(run(complete(route, wire.prefer_member("b")))) == "b"  # ... but b is preferred
    mb.outstanding = 5  # b at its bound (4 slots + 1 queued)
    assert answered_by(run(complete(route, wire.prefer_member("b")))) == "a"
    assert answered_by(run(complete(route, wire.prefer_member("nobody")))) == "a"


def test_a_pinned_member_alone_answers_and_an_unknown_one_is_404():
    route, (a, ma), (b, mb) = two_members(max_ongoing=4)
    mb.outstanding = 3
    assert answered_by(run(complete(route, wire.pin_member("b")))) == "b"
    mb.outstanding = 4  # b full: a pinned request is not sent to a
    reply = run(complete(route, wire.pin_member("b")))
    assert reply.status == 429 and not a.calls
    assert_openai_error(run(complete(route, wire.pin_member("c"))), 404, "no member 'c'", "member_not_found")


def test_a_full_member_is_skipped_and_every_member_full_is_429_with_retry_after():
    route, (a, ma), (b, mb) = two_members()
    a.failure = MemberFull("queue full")
    mb.outstanding = 1  # a goes first, refuses, b takes the request
    assert answered_by(run(complete(route))) == "b"
    assert len(a.calls) == 1 and ma.failed == 0  # full is not down
    b.failure = MemberFull("queue full")
    reply = run(complete(route))
    assert_openai_error(reply, 429, "at its request bound")
    assert reply.headers["Retry-After"] == "3"


def test_members_at_their_bounds_are_not_called():
    route, (a, ma), (b, mb) = two_members(max_ongoing=2, max_queued=1)
    ma.outstanding = mb.outstanding = 3
    reply = run(complete(route))
    assert reply.status == 429 and reply.headers["Retry-After"] == "3"
    assert not a.calls and not b.calls


def test_a_gone_member_is_marked_down_and_the_next_member_answers():
    route, (a, ma), (b, mb) = two_members()
    a.failure = MemberGone("ActorDiedError")
    mb.outstanding = 1
    reply = run(complete(route))
    assert reply.status == 200 and answered_by(reply) == "b"
    states = {s.name: s for s in wire.parse_pools(run(route.handle("GET", wire.POOLS_PATH, {}, b"")).body)[MODEL]}
    assert states["a"].down and states["a"].failed == 1 and states["b"].up
    assert answered_by(run(complete(route))) == "b"  # a is skipped while down
    assert len(a.calls) == 1


def test_every_member_down_is_503_with_retry_after_while_serve_replaces_them():
    route, (a, ma), (b, mb) = two_members()
    a.failure = b.failure = MemberGone("unreachable")
    reply = run(complete(route))  # their replicas died just now: Serve replaces them
    assert_openai_error(reply, 503, "a replica is starting")
    assert reply.headers["Retry-After"] == "3"
    assert run(complete(route)).status == 503  # and stays so, without calling them again
    assert len(a.calls) == len(b.calls) == 1
    pool = route.pools[MODEL]
    pool.set_replicas(ma, 0, starting=1)  # the controller: a, no replica running, one starting
    pool.set_replicas(mb, 0)
    assert run(complete(route)).headers["Retry-After"] == "3"
    pool.set_replicas(ma, 0)  # nothing is coming back: no time to come back at
    reply = run(complete(route))
    assert_openai_error(reply, 503, "none is starting")
    assert "Retry-After" not in reply.headers


def test_an_external_member_that_failed_is_not_coming_back_on_its_own():
    route, (a, ma), (b, mb) = two_members()
    ma.deployment = None  # an external server: nothing restarts it
    route.pools[MODEL].members.remove(mb)
    a.failure = MemberGone("unreachable")
    reply = run(complete(route))
    assert_openai_error(reply, 503, "none is starting")
    assert "Retry-After" not in reply.headers


def test_a_member_bug_is_an_openai_shaped_500_and_not_a_down_member():
    route, (a, ma), (b, mb) = two_members()
    a.failure = b.failure = KeyError("oops")
    reply = run(complete(route))
    assert_openai_error(reply, 500, "log has its details under this id", code="internal_error")
    assert "KeyError" not in reply.body["error"]["message"] and "oops" not in reply.body["error"]["message"]
    assert ma.failed == mb.failed == 0


# -- what is refused before any member -----------------------------------------------------------
@pytest.mark.parametrize(
    "raw, status, words, code",
    [
        (b"{oops", 400, "not valid JSON", None),
        (b"[1, 2]", 400, "must be a JSON object", None),
        (b"", 400, "must be a JSON object", None),
        (json.dumps({"prompt": "x"}).encode(), 400, "model: required", None),
        (json.dumps({"model": "", "prompt": "x"}).encode(), 400, "model: required", None),
        (body("no-such-judge"), 404, "not served here", "model_not_found"),
        (body(max_tokens=-3), 400, "max_tokens", None),
        (body(temperature="hot"), 400, "temperature", None),
        (json.dumps({"model": MODEL}).encode(), 400, "prompt", None),
    ],
)
def test_bad_requests_are_openai_shaped_4xx_and_reach_no_member(raw, status, words, code):
    route, (a, _), (b, _) = two_members()
    assert_openai_error(run(complete(route, raw=raw)), status, words, code)
    assert not a.calls and not b.calls


def test_the_api_key_is_checked_except_for_health():
    a = FakeMember("a")
    route = router(member(a), api_key="sesame")
    for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": "sesame"}):
        assert_openai_error(run(complete(route, headers)), 401, "API key", "invalid_api_key")
        assert run(route.handle("GET", wire.MODELS_PATH, headers, b"")).status == 401
        assert run(route.handle("GET", wire.POOLS_PATH, headers, b"")).status == 401
    assert not a.calls
    assert run(route.handle("GET", wire.HEALTH_PATH, {}, b"")).body == wire.health_json([MODEL])
    assert answered_by(run(complete(route, {"authorization": "Bearer sesame"}))) == "a"


def test_an_unknown_path_is_404():
    route, _, _ = two_members()
    assert_openai_error(run(route.handle("GET", "/v1/embeddings", {}, b"")), 404, "no route")


# -- what an answer says ------------------------------------------------------------------------
def test_answers_carry_the_members_lineage_in_the_body_and_in_headers():
    a = FakeMember("a")
    reply = run(complete(router(member(a))))
    assert reply.status == 200
    assert wire.lineage_of(json.loads(reply.payload())) == a.lineage
    assert reply.headers == a.lineage.headers() and reply.headers


def test_the_pool_card_names_every_member_and_the_smallest_context():
    a, b = FakeMember("a", context_length=4096), FakeMember("b", context_length=2048)
    route = router(member(a), member(b))
    card = run(route.handle("GET", f"{wire.MODELS_PATH}/{MODEL}", {}, b"")).body
    assert card["id"] == MODEL and wire.is_route_card(card) and wire.max_model_len(card) == 2048
    listed = run(route.handle("GET", wire.MODELS_PATH, {}, b"")).body
    assert listed["object"] == "list" and listed["data"] == [card]
    assert_openai_error(run(route.handle("GET", f"{wire.MODELS_PATH}/other", {}, b"")), 404, "not served", "model_not_found")


def test_pools_report_each_members_state_engine_and_engine_stats():
    route, (a, ma), (b, mb) = two_members(max_ongoing=3, max_queued=2)
    route.pools[MODEL].set_replicas(mb, 0)  # the controller reports b has no running replica
    pools = wire.parse_pools(json.loads(run(route.handle("GET", wire.POOLS_PATH, {}, b"")).payload()))
    a_state, b_state = pools[MODEL]
    assert (a_state.name, a_state.engine, a_state.capacity, a_state.down) == ("a", "fake", 3, False)
    assert a_state.engine_stats == {"in_flight": 0}
    assert b_state.down and b_state.engine_stats is None  # no statistics asked of a down member
    assert wire.every_pool_up(pools)


# -- bounds under load ----------------------------------------------------------------------------
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    bounds=st.lists(st.tuples(st.integers(1, 4), st.integers(0, 3), st.integers(1, 2)), min_size=1, max_size=3),
    requests=st.integers(0, 40),
    preferred=st.integers(0, 3),
)
def test_requests_never_exceed_any_members_capacity_and_queue(bounds, requests, preferred):
    """However many arrive at once, each member holds at most replicas x max_ongoing + max_queued;
    exactly that many are taken, and the rest are refused at once with 429."""
    fakes = [FakeMember(f"m{i}") for i in range(len(bounds))]
    members = [member(f, max_ongoing=o, max_queued=q, replicas=r) for f, (o, q, r) in zip(fakes, bounds)]
    route = router(*members)
    headers = wire.prefer_member(f"m{preferred}")

    async def flood():
        gate = asyncio.Event()
        for f in fakes:
            f.gate = gate
        tasks = [asyncio.create_task(complete(route, headers)) for _ in range(requests)]
        for _ in range(3):
            await asyncio.sleep(0)  # every request reaches a member, or is refused
        held = sum(f.in_flight for f in fakes)
        gate.set()
        return held, await asyncio.gather(*tasks)

    held, replies = run(flood())
    limit = sum(m.capacity + m.max_queued for m in members)
    assert held == min(requests, limit)
    for f, m in zip(fakes, members):
        assert f.peak <= m.capacity + m.max_queued
        assert m.outstanding == 0
    statuses = [r.status for r in replies]
    assert statuses.count(200) == min(requests, limit) and statuses.count(429) == requests - min(requests, limit)
