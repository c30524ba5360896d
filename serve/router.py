"""The route's logic, free of any web framework and of Ray: (method, path, headers, body) -> Reply.

It checks the API key, validates the body (bad types, unknown fields and bounds are a 4xx here,
whichever engine would have answered, and nothing past a bound reaches a replica: `serve.openai`),
picks the pool member with the most spare capacity, and forwards the body. A fault of the route
itself is a 500 with an error id, never exception text (`serve.errors.internal_error`).
A member whose replica dies under the request is marked down and the request goes to the next
member, so no request is lost to a dying replica. When every member is at its bounds the answer
is a quick 429 with Retry-After: callers slow down instead of piling up. When none is up it is a
503 - with Retry-After while Serve is starting a replica (a job waits for it), without when none
is coming back (a job's retries end soon).
Lineage also goes into response headers for clients that drop extra fields (`serve.wire`).

Members are reached through `serve.pool.MemberClient`, whatever their engine, so this module is
tested with fake members. The ingress deployment serves it behind Ray Serve's HTTP proxy and,
optionally, on a listener of its own (serve.front=direct), which skips the proxy hop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from serve import openai as oa
from serve import wire
from serve.errors import MemberFull, MemberGone, OpenAIError, error_body, internal_error
from serve.pool import Member, Pool

log = logging.getLogger(__name__)

_VALIDATORS = {"completions": oa.CompletionRequest, "chat": oa.ChatRequest, "tokenize": oa.TokenizeRequest}
_MODEL_PREFIX = wire.MODELS_PATH + "/"
_OPENAI_API = ", ".join([wire.MODELS_PATH] + [p for p in wire.POST_METHODS if p.startswith("/v1/")])


@dataclass
class Reply:
    status: int
    body: object
    headers: Dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


def _error(status: int, message: str, param=None, code=None, headers=None) -> Reply:
    return Reply(status, error_body(status, message, param, code), headers or {})


class Router:
    def __init__(self, pools: Mapping[str, Sequence[Member]], api_key: Optional[str], retry_after_s: int):
        self.pools = {model_id: Pool(model_id, list(members)) for model_id, members in pools.items()}
        self._api_key = api_key
        self._retry_after = str(retry_after_s)
        self._cards: Dict[str, dict] = {}

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        try:
            return await self._handle(method, path, headers, body)
        except Exception:  # noqa: BLE001 - the route's own fault: a 500 with an id, details in the log
            return Reply(500, internal_error(log, f"{method} {path[:200]}"))

    @staticmethod
    def too_large() -> Reply:
        """What a front answers when a body is past `serve.openai.MAX_BODY_BYTES` (it stops reading)."""
        return _error(413, f"the request body is larger than {oa.MAX_BODY_BYTES} bytes", code="request_too_large")

    async def _handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        path = "/" + path.strip("/") if path != "/" else path
        if path == wire.LIVE_PATH:
            return Reply(200, {"status": "ok"})
        if path == wire.HEALTH_PATH:
            return self._health()
        denied = self._check_key(headers)
        if denied is not None:
            return denied
        if method == "POST" and path in wire.POST_METHODS:
            return await self._forward(wire.POST_METHODS[path], headers, body)
        if method == "GET" and path == wire.MODELS_PATH:
            return Reply(200, {"object": "list", "data": [await self._card(m) for m in sorted(self.pools)]})
        if method == "GET" and path.startswith(_MODEL_PREFIX):
            model_id = path[len(_MODEL_PREFIX):]
            return Reply(200, await self._card(model_id)) if model_id in self.pools else self._unknown_model(model_id)
        if method == "GET" and path == wire.POOLS_PATH:
            states = {model_id: await self._states(pool) for model_id, pool in self.pools.items()}
            return Reply(200, wire.pools_json(states))
        return _error(404, f"no route {method[:10]} {path[:100]}; the API is {_OPENAI_API}")

    def _health(self) -> Reply:
        """Readiness: 200 once every pool has a member that can answer, else 503 (liveness: /live)."""
        waiting = [model_id for model_id, pool in self.pools.items() if not pool.ready()]
        if waiting:
            return Reply(503, wire.unready_json(list(self.pools), waiting), {"Retry-After": self._retry_after})
        return Reply(200, wire.health_json(list(self.pools)))

    async def _forward(self, method: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        if raw and len(raw) > oa.MAX_BODY_BYTES:  # a front that read it all anyway
            return self.too_large()
        try:
            body = json.loads(raw or b"null", parse_constant=_not_json)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            return _error(400, f"model: required (a model id from GET {wire.MODELS_PATH})", "model")
        pool = self.pools.get(model_id)
        if pool is None:
            return self._unknown_model(model_id)
        try:
            request = oa.parse(_VALIDATORS[method], body)
            if hasattr(request, "unsupported"):
                request.unsupported()
            request.check_fits(pool.context_length())
        except OpenAIError as e:
            return Reply(e.status, e.body())
        # A preferred member goes first when it has room (e.g. the one holding a row's feedback
        # in its cache); unlike a pinned one, others still take the request when it has none.
        pinned, preferred = wire.requested_members(headers)
        tried: set = set()
        while True:
            candidates = [m for m in pool.candidates() if m not in tried and (not pinned or m.name == pinned)]
            if not candidates:
                break
            member = next((m for m in candidates if m.name == preferred), candidates[0])
            tried.add(member)
            member.outstanding += 1
            try:
                reply = await member.client.call(method, body)
            except MemberFull as e:
                if e.retry_after_s:  # it asked for a pause (capped where it was read)
                    pool.pause(member, e.retry_after_s)
                continue  # its queue is full: try the next member
            except MemberGone as e:
                log.warning("member %s of %s failed under a request (%s); trying another", member.name, model_id, e)
                pool.mark_down(member, e.retry_after_s)
                continue
            except Exception:  # noqa: BLE001 - a bug, not the client's: a 500 with an id, no internals
                return Reply(500, internal_error(log, f"a request to '{model_id}' ({member.name})"))
            finally:
                member.outstanding -= 1
            member.served += 1
            return _answer(reply)
        if pinned and pool.member(pinned) is None:
            return _error(404, f"'{model_id}' has no member '{pinned[:100]}'", code="member_not_found")
        state = pool.state()
        if state == "down":  # nothing is coming back: retrying soon would only meet this again
            return _error(503, f"every member of '{model_id}' is down and none is starting: see GET /pools"
                               " and the replicas' logs (Serve's dashboard, /tmp/ray/session_latest/logs/serve)")
        # Members that asked for a pause say when to come back; asking sooner only meets another 429.
        retry = str(max(int(self._retry_after), math.ceil(pool.pause_left())))
        why = "at its request bound" if state == "full" else "down; a replica is starting"
        return _error(429 if state == "full" else 503, f"every member of '{model_id}' is {why}; retry after {retry} s",
                      headers={"Retry-After": retry})

    async def _states(self, pool: Pool) -> List[wire.MemberState]:
        """Each member's routing state, with engine statistics from one of its replicas."""
        states = pool.snapshot()
        for state, member in zip(states, pool.members):
            # Not a member with no replica: asking a cold one would wake it (and wait for it).
            if not state.down and member.replicas > 0:
                try:
                    state.engine_stats = await asyncio.wait_for(member.client.stats(), timeout=2)
                except Exception:  # noqa: BLE001 - busy or starting: no statistics this time
                    state.engine_stats = None
        return states

    # -- helpers ------------------------------------------------------------------------
    def _check_key(self, headers: Mapping[str, str]) -> Optional[Reply]:
        if not self._api_key:
            return None
        header = headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if hmac.compare_digest(token.encode(), self._api_key.encode()):
            return None
        return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    async def _card(self, model_id: str) -> dict:
        """The pool's /v1/models entry, kept once every member has answered with its card."""
        if model_id in self._cards:
            return self._cards[model_id]
        pool = self.pools[model_id]
        cards = []
        for member in pool.members:
            if member.replicas == 0:  # starting, down, or scaled to zero (a card request would wake it)
                continue
            try:
                cards.append(await asyncio.wait_for(member.client.card(), timeout=5))
            except Exception:  # noqa: BLE001 - a member still starting has no card yet
                continue
        card = wire.pool_card(model_id, cards)
        if not cards and pool.context_length():  # none has a replica yet: the context is configured
            card["max_model_len"] = pool.context_length()
        if len(cards) == len(pool.members):
            self._cards[model_id] = card
        return card

    def _unknown_model(self, model_id) -> Reply:
        return _error(
            404,
            f"model '{str(model_id)[:100]}' is not served here; available: {', '.join(sorted(self.pools))}",
            "model",
            "model_not_found",
        )


def _not_json(constant: str):
    raise ValueError(f"{constant} is not JSON")  # Python's parser takes NaN and Infinity; JSON does not


def _answer(reply: dict) -> Reply:
    """A member's {"status", "body"} as the route's reply, its lineage also in headers."""
    lineage = wire.lineage_of(reply["body"])
    return Reply(reply["status"], reply["body"], lineage.headers() if lineage else {})
