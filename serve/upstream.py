"""Pool members that are external OpenAI servers (engine `openai`), called by the ingress itself.

An existing vLLM server on a GPU box, a llamafile, a hosted API: it joins a judge pool like a
Ray-deployed member, but needs no replica of its own - the ingress forwards the body over HTTP,
renaming the model if the upstream calls it something else, and answers with the same
{"status", "body"} contract and lineage as the other engines. A server that does not answer
(or answers 5xx, or refuses our key or model name: the route's configuration, not the client's
mistake) is `MemberGone` to the router, like a replica that died; one that answers 429 is
`MemberFull`, like a replica whose queue is full. A Retry-After it sends is obeyed (the member
is skipped that long) up to `RETRY_AFTER_MAX_S`: a server may ask for an hour, and one member's
word must not take it out of the pool for that long. Its other 4xx answers reach the client in
OpenAI's shape, whatever shape the server used.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Optional

import aiohttp

from serve import wire
from serve.config import ModelConfig
from serve.errors import MemberFull, MemberGone, error_body
from serve.members import MemberSpec, UpstreamSettings

# The longest an external server's Retry-After keeps it out of its pool.
RETRY_AFTER_MAX_S = 30.0
# Answers that mean the route is misconfigured for this server (key, model name, URL).
_CONFIG_STATUSES = {401, 403, 404}

# Pool methods -> their path under an OpenAI base URL (".../v1"); /tokenize is not part of the
# OpenAI API, so upstreams need not have it.
_OPENAI_PATHS = {method: path[len("/v1"):] for path, method in wire.POST_METHODS.items() if path.startswith("/v1/")}


def build_member(m: ModelConfig, spec: MemberSpec) -> MemberSpec:
    """The engine registry's builder: no deployment, the ingress calls the upstream itself."""
    upstream = UpstreamSettings(m.model, m.engine_kwargs.get("model"), m.engine_kwargs.get("api_key_env"))
    return replace(spec, deployment=None, upstream=upstream)


class Upstream:
    """A `serve.pool.MemberClient` over HTTP."""

    def __init__(self, spec: MemberSpec, timeout_s: float = 600.0, retry_after_max_s: float = RETRY_AFTER_MAX_S):
        settings = spec.upstream
        self.url = settings.url.rstrip("/")
        self.model_id = spec.model_id
        self.context_length = spec.context_length
        self.upstream_model = settings.upstream_model or spec.model_id
        key = os.environ.get(settings.api_key_env) if settings.api_key_env else None
        self.lineage = wire.Lineage(backend="openai", model=spec.model_id, member=spec.name,
                                    model_file=self.upstream_model, upstream=self.url)
        self._headers = wire.auth_headers(key)
        self._max_connections = spec.max_ongoing + spec.max_queued
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=10.0)
        self.retry_after_max_s = retry_after_max_s
        self._http: Optional[aiohttp.ClientSession] = None  # made on the serving event loop, on first use

    async def call(self, method: str, body: dict) -> dict:
        path = _OPENAI_PATHS.get(method)
        if path is None:
            return {"status": 404, "body": error_body(404, f"'{method}' is not forwarded to upstream members")}
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        # The router refused stream=true already; stream=false keeps a server that streams by
        # default from answering SSE, which would read as a broken member.
        request = dict(body, model=self.upstream_model, stream=False)
        try:
            async with self._http.post(self.url + path, json=request) as response:
                status = response.status
                wait = self._retry_after(response.headers.get("Retry-After"))
                if status == 429:  # it is there, only busy: the next member may take it, or the client waits
                    raise MemberFull("HTTP 429", wait)
                if status >= 500 or status in _CONFIG_STATUSES:
                    raise MemberGone(f"HTTP {status}", wait)
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as e:
            raise MemberGone(type(e).__name__) from None
        try:
            answer = json.loads(raw)
        except ValueError:
            answer = None
        if status < 300:
            if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
                raise MemberGone("HTTP 200 without an OpenAI answer")
            answer["model"] = self.model_id
            wire.with_lineage(answer, self.lineage)
            return {"status": status, "body": answer}
        return {"status": status, "body": _openai_error(status, answer, raw)}

    def _retry_after(self, value: Optional[str]) -> Optional[float]:
        seconds = wire.parse_retry_after(value)
        return None if seconds is None else min(seconds, self.retry_after_max_s)

    async def card(self) -> dict:
        return wire.model_card(self.model_id, self.context_length, self.lineage, "openai")

    async def stats(self) -> Optional[dict]:
        return None  # an external server's statistics are its own


def _openai_error(status: int, answer, raw: bytes) -> dict:
    """An upstream's error answer in OpenAI's shape (servers use their own: {"detail"}, HTML...)."""
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        param, code = error.get("param"), error.get("code")
        return error_body(status, error["message"][:2000], param if isinstance(param, str) else None,
                          code if isinstance(code, str) else None)
    detail = answer.get("detail") if isinstance(answer, dict) else None
    message = detail if isinstance(detail, str) else raw[:300].decode("utf-8", "replace") or f"HTTP {status}"
    return error_body(status, f"the upstream server refused the request: {message}")
