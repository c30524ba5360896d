"""The OpenAI-style ingress: one HTTP route in front of every judge pool.

It checks the API key, validates the body (bad types and bounds are a 400 here, whichever engine
would have answered), picks the pool member with the most spare capacity, and forwards the body.
A member whose replica dies under the request is marked down and the request goes to the next
member, so no request is lost to a dying replica. When every member is at its bounds the answer
is a quick 429 with Retry-After (503 when none is up): callers slow down instead of piling up.
Lineage also goes into `x-judgefleet-*` headers for clients that drop extra fields.
"""

import asyncio
import hmac
import json
import logging
from typing import Dict, List, Optional

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import ActorUnavailableError, RayActorError
from ray.serve.exceptions import BackPressureError

from serve import openai as oa
from serve.errors import OpenAIError, error_body
from serve.pool import Member, Pool
from serve.upstream import Upstream, UpstreamUnreachable

log = logging.getLogger(__name__)

app = FastAPI(title="judgefleet route", docs_url=None, redoc_url=None)

_LINEAGE_HEADERS = {
    "backend": "x-judgefleet-backend",
    "member": "x-judgefleet-member",
    "replica": "x-judgefleet-replica",
    "model_file": "x-judgefleet-model-file",
    "model_sha256": "x-judgefleet-model-sha256",
    "node": "x-judgefleet-node",
}
_VALIDATORS = {"completions": oa.CompletionRequest, "chat": oa.ChatRequest, "tokenize": oa.TokenizeRequest}
# A replica that died, or cannot be reached, under a request: worth another member.
_REPLICA_GONE = (RayActorError, ActorUnavailableError)
REFRESH_S = 1.0


def _member(model_id: str, spec: dict) -> Member:
    spec = dict(spec)
    upstream = spec.pop("upstream", None)
    if upstream:
        spec["handle"] = Upstream(upstream["url"], model_id, spec["name"], upstream.get("upstream_model"),
                                  upstream.get("api_key_env"), max_connections=spec["max_ongoing"] + spec["max_queued"])
    return Member(**spec)


def _error(status: int, message: str, param=None, code=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


@serve.deployment(name="ingress", max_ongoing_requests=2000)
@serve.ingress(app)
class Ingress:
    async def __init__(self, pools: Dict[str, List[dict]], api_key: Optional[str], retry_after_s: int, app_name: str):
        self._pools = {model_id: Pool(model_id, [_member(model_id, spec) for spec in specs]) for model_id, specs in pools.items()}
        self._api_key = api_key
        self._retry_after = str(retry_after_s)
        self._app_name = app_name
        self._cards: Dict[str, dict] = {}
        self._refresher = asyncio.get_running_loop().create_task(self._refresh_forever())

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "models": sorted(self._pools)}

    @app.get("/pools")
    async def pools(self, request: Request):
        denied = self._check_key(request)
        if denied is not None:
            return denied
        return {model_id: pool.snapshot() for model_id, pool in self._pools.items()}

    @app.get("/v1/models")
    async def list_models(self, request: Request):
        denied = self._check_key(request)
        if denied is not None:
            return denied
        return {"object": "list", "data": [await self._card(m) for m in sorted(self._pools)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str, request: Request):
        denied = self._check_key(request)
        if denied is not None:
            return denied
        if model_id not in self._pools:
            return self._unknown_model(model_id)
        return await self._card(model_id)

    @app.post("/v1/completions")
    async def completions(self, request: Request):
        return await self._forward(request, "completions")

    @app.post("/v1/chat/completions")
    async def chat_completions(self, request: Request):
        return await self._forward(request, "chat")

    @app.post("/tokenize")
    async def tokenize(self, request: Request):
        return await self._forward(request, "tokenize")

    # -- routing --------------------------------------------------------------------------
    async def _forward(self, request: Request, method: str):
        denied = self._check_key(request)
        if denied is not None:
            return denied
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            return _error(400, "model: required (a model id from GET /v1/models)", "model")
        pool = self._pools.get(model_id)
        if pool is None:
            return self._unknown_model(model_id)
        try:
            oa.parse(_VALIDATORS[method], body)
        except OpenAIError as e:
            return JSONResponse(e.body(), status_code=e.status)
        pinned = request.headers.get("x-judgefleet-member")
        tried: set = set()
        while True:
            candidates = [m for m in pool.candidates() if m not in tried and (not pinned or m.name == pinned)]
            if not candidates:
                break
            member = candidates[0]
            tried.add(member)
            member.outstanding += 1
            try:
                if isinstance(member.handle, Upstream):
                    reply = await member.handle.call(method, body)
                else:
                    reply = await getattr(member.handle, method).remote(body)
            except BackPressureError:
                continue  # its queue is full: try the next member
            except (*_REPLICA_GONE, UpstreamUnreachable) as e:
                log.warning("member %s of %s failed under a request (%s); trying another", member.name, model_id, type(e).__name__)
                pool.mark_down(member)
                continue
            except Exception as e:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
                log.exception("request to %s/%s failed", model_id, member.name)
                return _error(500, f"internal error in '{model_id}' ({member.name}): {type(e).__name__}: {e}")
            finally:
                member.outstanding -= 1
            member.served += 1
            return self._reply(reply)
        if pinned and pool.member(pinned) is None:
            return _error(404, f"'{model_id}' has no member '{pinned}'", code="member_not_found")
        full = pool.state() == "full"
        return _error(
            429 if full else 503,
            f"every member of '{model_id}' is {'at its request bound' if full else 'down'}; retry after {self._retry_after} s",
            headers={"Retry-After": self._retry_after},
        )

    def _reply(self, reply: dict) -> JSONResponse:
        result = reply["body"]
        lineage = result.get("judgefleet") if isinstance(result, dict) else None
        headers = {h: str(lineage[k]) for k, h in _LINEAGE_HEADERS.items() if lineage and lineage.get(k)}
        return JSONResponse(result, status_code=reply["status"], headers=headers)

    async def _refresh_forever(self) -> None:
        """Keep each member's running replica count current, from Serve's controller."""
        while True:
            try:
                status = await asyncio.to_thread(serve.status)
                deployments = status.applications[self._app_name].deployments
                for pool in self._pools.values():
                    for member in pool.members:
                        info = deployments.get(member.deployment) if member.deployment else None
                        if info is not None:
                            states = {str(getattr(k, "value", k)): v for k, v in info.replica_states.items()}
                            pool.set_replicas(member, states.get("RUNNING", 0))
            except Exception:  # noqa: BLE001 - keep routing on the last known state
                log.debug("could not refresh replica counts", exc_info=True)
            await asyncio.sleep(REFRESH_S)

    # -- helpers ------------------------------------------------------------------------
    def _check_key(self, request: Request) -> Optional[JSONResponse]:
        if not self._api_key:
            return None
        header = request.headers.get("authorization", "")
        token = header[7:] if header.lower().startswith("bearer ") else ""
        if hmac.compare_digest(token.encode(), self._api_key.encode()):
            return None
        return _error(401, "missing or wrong API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")

    async def _card(self, model_id: str) -> dict:
        """The pool's /v1/models entry: its members, and the smallest context among them."""
        if model_id not in self._cards:
            pool = self._pools[model_id]
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

    def _unknown_model(self, model_id) -> JSONResponse:
        return _error(
            404,
            f"model '{model_id}' is not served here; available: {', '.join(sorted(self._pools))}",
            "model",
            "model_not_found",
        )
