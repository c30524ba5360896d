"""The OpenAI-style ingress: one HTTP route in front of every model deployment.

It validates just enough to route (a JSON object with a known `model`), forwards the body to
that model's deployment, and turns what comes back - a body or an `OpenAIError` - into the
HTTP response. Lineage also goes into `x-judgefleet-*` headers for clients that drop extra fields.
"""

import json
import logging
from typing import Dict

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayActorError, RayTaskError

from serve.errors import OpenAIError, error_body

log = logging.getLogger(__name__)

app = FastAPI(title="judgefleet route", docs_url=None, redoc_url=None)

_LINEAGE_HEADERS = {
    "backend": "x-judgefleet-backend",
    "replica": "x-judgefleet-replica",
    "model_file": "x-judgefleet-model-file",
    "model_sha256": "x-judgefleet-model-sha256",
    "node": "x-judgefleet-node",
}


def _error(status: int, message: str, param=None, code=None, headers=None) -> JSONResponse:
    return JSONResponse(error_body(status, message, param, code), status_code=status, headers=headers)


@serve.deployment(name="ingress", max_ongoing_requests=1000)
@serve.ingress(app)
class Ingress:
    def __init__(self, models: Dict[str, object]):
        self._models = models  # model id -> DeploymentHandle
        self._cards: Dict[str, dict] = {}

    @app.get("/health")
    async def health(self) -> dict:
        return {"status": "ok", "models": sorted(self._models)}

    @app.get("/v1/models")
    async def list_models(self) -> dict:
        return {"object": "list", "data": [await self._card(m) for m in sorted(self._models)]}

    @app.get("/v1/models/{model_id:path}")
    async def get_model(self, model_id: str):
        if model_id not in self._models:
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

    # -- helpers ------------------------------------------------------------------------
    async def _card(self, model_id: str) -> dict:
        if model_id not in self._cards:
            self._cards[model_id] = await self._models[model_id].card.remote()
        return self._cards[model_id]

    def _unknown_model(self, model_id) -> JSONResponse:
        return _error(
            404,
            f"model '{model_id}' is not served here; available: {', '.join(sorted(self._models))}",
            "model",
            "model_not_found",
        )

    async def _forward(self, request: Request, method: str):
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            return _error(400, "the request body is not valid JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        model_id = body.get("model")
        if not isinstance(model_id, str) or not model_id:
            return _error(400, "model: required (a model id from GET /v1/models)", "model")
        if model_id not in self._models:
            return self._unknown_model(model_id)
        try:
            reply = await getattr(self._models[model_id], method).remote(body)
        except Exception as e:  # noqa: BLE001 - every failure becomes an OpenAI-shaped answer
            return self._failure(e, model_id)
        result = reply["body"]
        lineage = result.get("judgefleet") or {}
        headers = {h: str(lineage[k]) for k, h in _LINEAGE_HEADERS.items() if lineage.get(k)}
        return JSONResponse(result, status_code=reply["status"], headers=headers)

    def _failure(self, e: Exception, model_id: str) -> JSONResponse:
        cause = e.cause if isinstance(e, RayTaskError) and getattr(e, "cause", None) else e
        if isinstance(cause, OpenAIError):
            return JSONResponse(cause.body(), status_code=cause.status)
        if isinstance(cause, RayActorError):
            return _error(503, f"a replica of '{model_id}' died; retry", headers={"Retry-After": "1"})
        log.exception("request to %s failed", model_id)
        return _error(500, f"internal error in '{model_id}': {type(cause).__name__}: {cause}")
