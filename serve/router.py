"""The route's logic, free of any web framework: (method, path, headers, body) -> Reply.

It checks the API key, validates the body (bad types and bounds are a 400 here, whichever engine
would have answered), picks the pool member with the most spare capacity, and forwards the body.
A member whose replica dies under the request is marked down and the request goes to the next
member, so no request is lost to a dying replica. When every member is at its bounds the answer
is a quick 429 with Retry-After (503 when none is up): callers slow down instead of piling up.
Lineage also goes into `x-judgefleet-*` headers for clients that drop extra fields.

The ingress deployment serves it behind Ray Serve's HTTP proxy and, optionally, on a listener of
its own (serve.front=direct), which skips the proxy hop.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional

from serve import openai as oa
from serve.errors import OpenAIError, error_body
from serve.pool import Member, Pool
from serve.upstream import Upstream, UpstreamUnreachable

log = logging.getLogger(__name__)

_LINEAGE_HEADERS = {
    "backend": "x-judgefleet-backend",
    "member": "x-judgefleet-member",
    "replica": "x-judgefleet-replica",
    "model_file": "x-judgefleet-model-file",
    "model_sha256": "x-judgefleet-model-sha256",
    "node": "x-judgefleet-node",
}
_POSTS = {"/v1/completions": "completions", "/v1/chat/completions": "chat", "/tokenize": "tokenize"}
_VALIDATORS = {"completions": oa.CompletionRequest, "chat": oa.ChatRequest, "tokenize": oa.TokenizeRequest}
REFRESH_S = 1.0


@dataclass
class Reply:
    status: int
    body: object
    headers: Dict[str, str] = field(default_factory=dict)

    def payload(self) -> bytes:
        return json.dumps(self.body).encode()


def _error(status: int, message: str, param=None, code=None, headers=None) -> Reply:
    return Reply(status, error_body(status, message, param, code), headers or {})


def _member(model_id: str, spec: dict) -> Member:
    spec = dict(spec)
    upstream = spec.pop("upstream", None)
    if upstream:
        spec["handle"] = Upstream(upstream["url"], model_id, spec["name"], upstream.get("upstream_model"),
                                  upstream.get("api_key_env"), max_connections=spec["max_ongoing"] + spec["max_queued"])
    return Member(**spec)


class Router:
    def __init__(self, pools: Dict[str, List[dict]], api_key: Optional[str], retry_after_s: int, app_name: str):
        self.pools = {model_id: Pool(model_id, [_member(model_id, s) for s in specs]) for model_id, specs in pools.items()}
        self._api_key = api_key
        self._retry_after = str(retry_after_s)
        self._app_name = app_name
        self._cards: Dict[str, dict] = {}

    async def handle(self, method: str, path: str, headers: Mapping[str, str], body: bytes) -> Reply:
        path = "/" + path.strip("/") if path != "/" else path
        if path == "/health":
            return Reply(200, {"status": "ok", "models": sorted(self.pools)})
        denied = self._check_key(headers)
        if denied is not None:
            return denied
        if method == "POST" and path in _POSTS:
            return await self._forward(_POSTS[path], headers, body)
        if method == "GET" and path == "/v1/models":
            return Reply(200, {"object": "list", "data": [await self._card(m) for m in sorted(self.pools)]})
        if method == "GET" and path.startswith("/v1/models/"):
            model_id = path[len("/v1/models/"):]
            return Reply(200, await self._card(model_id)) if model_id in self.pools else self._unknown_model(model_id)
        if method == "GET" and path == "/pools":
            return Reply(200, {model_id: await self._snapshot(pool) for model_id, pool in self.pools.items()})
        return _error(404, f"no route {method} {path}; the API is /v1/models, /v1/completions, /v1/chat/completions")

    async def _forward(self, method: str, headers: Mapping[str, str], raw: bytes) -> Reply:
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            return _error(400, "model: required (a model id from GET /v1/models)", "model")
        pool = self.pools.get(model_id)
        if pool is None:
            return self._unknown_model(model_id)
        try:
            oa.parse(_VALIDATORS[method], body)
        except OpenAIError as e:
            return Reply(e.status, e.body())
        pinned = headers.get("x-judgefleet-member")
        # A preferred member goes first when it has room (e.g. the one holding a row's feedback
        # in its cache); unlike a pinned one, others still take the request when it has none.
        preferred = headers.get("x-judgefleet-prefer-member")
        tried: set = set()
        while True:
            candidates = [m for m in pool.candidates() if m not in tried and (not pinned or m.name == pinned)]
            if not candidates:
                break
            member = next((m for m in candidates if m.name == preferred), candidates[0])
            tried.add(member)
            member.outstanding += 1
            try:
                if isinstance(member.handle, Upstream):
                    reply = await member.handle.call(method, body)
                else:
                    reply = await getattr(member.handle, method).remote(body)
            except UpstreamUnreachable as e:
                log.warning("member %s of %s failed (%s); trying another", member.name, model_id, e)
                pool.mark_down(member)
                continue
            except Exception as e:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
                kind = _classify(e)
                if kind == "full":
                    continue  # its queue is full: try the next member
                if kind == "gone":
                    log.warning("member %s of %s lost a replica under a request (%s); trying another",
                                member.name, model_id, type(e).__name__)
                    pool.mark_down(member)
                    continue
                log.exception("request to %s/%s failed", model_id, member.name)
                return _error(500, f"internal error in '{model_id}' ({member.name}): {type(e).__name__}: {e}")
            finally:
                member.outstanding -= 1
            member.served += 1
            return _lineage_reply(reply)
        if pinned and pool.member(pinned) is None:
            return _error(404, f"'{model_id}' has no member '{pinned}'", code="member_not_found")
        full = pool.state() == "full"
        return _error(
            429 if full else 503,
            f"every member of '{model_id}' is {'at its request bound' if full else 'down'}; retry after {self._retry_after} s",
            headers={"Retry-After": self._retry_after},
        )

    async def refresh_forever(self) -> None:
        """Keep each member's running replica count current, from Serve's controller."""
        from ray import serve

        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                deployments = status.applications[self._app_name].deployments
                for pool in self.pools.values():
                    for member in pool.members:
                        info = deployments.get(member.deployment) if member.deployment else None
                        if info is not None:
                            states = {str(getattr(k, "value", k)): v for k, v in info.replica_states.items()}
                            pool.set_replicas(member, states.get("RUNNING", 0))
            except Exception:  # noqa: BLE001 - keep routing on the last known state
                log.debug("could not refresh replica counts", exc_info=True)
            await asyncio.sleep(REFRESH_S)

    async def _snapshot(self, pool: Pool) -> list:
        """Each member's routing state, with engine statistics from one of its replicas."""
        rows = pool.snapshot()
        for row, member in zip(rows, pool.members):
            if member.deployment and not row["down"]:
                try:
                    row["engine"] = await asyncio.wait_for(member.handle.stats.remote(), timeout=2)
                except Exception:  # noqa: BLE001 - busy or starting: no statistics this time
                    row["engine"] = None
        return rows

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
        """The pool's /v1/models entry: its members, and the smallest context among them."""
        if model_id not in self._cards:
            pool = self.pools[model_id]
            cards = []
            for member in pool.members:
                try:
                    if isinstance(member.handle, Upstream):
                        cards.append(member.handle.card(member.context_length))
                        continue
                    cards.append(await asyncio.wait_for(member.handle.card.remote(), timeout=5))
                except Exception:  # noqa: BLE001 - a member still starting has no card yet
                    continue
            if not cards:
                return {"id": model_id, "object": "model", "owned_by": "judgefleet"}
            card = dict(cards[0])
            card["max_model_len"] = min(c["max_model_len"] for c in cards)
            card["judgefleet"] = dict(cards[0]["judgefleet"], members=[c["judgefleet"] for c in cards])
            if len(cards) == len(pool.members):
                self._cards[model_id] = card
            return card
        return self._cards[model_id]

    def _unknown_model(self, model_id) -> Reply:
        return _error(
            404,
            f"model '{model_id}' is not served here; available: {', '.join(sorted(self.pools))}",
            "model",
            "model_not_found",
        )


def _lineage_reply(reply: dict) -> Reply:
    result = reply["body"]
    lineage = result.get("judgefleet") if isinstance(result, dict) else None
    headers = {h: str(lineage[k]) for k, h in _LINEAGE_HEADERS.items() if lineage and lineage.get(k)}
    return Reply(reply["status"], result, headers)


def _classify(e: Exception) -> str:
    """'full' (the member's queue is full), 'gone' (its replica died or is unreachable), or 'bug'."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError

    if isinstance(e, BackPressureError):
        return "full"
    if isinstance(e, (RayActorError, ActorUnavailableError)):
        return "gone"
    return "bug"
