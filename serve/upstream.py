"""Pool members that are external OpenAI servers (engine `openai`), called by the ingress itself.

An existing vLLM server on a GPU box, a llamafile, a hosted API: it joins a judge pool like a
Ray-deployed member, but needs no replica of its own - the ingress forwards the body over HTTP,
renaming the model if the upstream calls it something else, and answers with the same
{"status", "body"} contract and lineage as the other engines. A server that does not answer
(or answers 5xx) is `MemberGone` to the router, like a replica that died; one that answers 429
is `MemberFull`, like a replica whose queue is full.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Optional

import aiohttp

from serve import wire
from serve.config import ModelConfig
from serve.errors import MemberFull, MemberGone, error_body
from serve.members import MemberSpec, UpstreamSettings

# Pool methods -> their path under an OpenAI base URL (".../v1"); /tokenize is not part of the
# OpenAI API, so upstreams need not have it.
_OPENAI_PATHS = {method: path[len("/v1"):] for path, method in wire.POST_METHODS.items() if path.startswith("/v1/")}


def build_member(m: ModelConfig, spec: MemberSpec) -> MemberSpec:
    """The engine registry's builder: no deployment, the ingress calls the upstream itself."""
    upstream = UpstreamSettings(m.model, m.engine_kwargs.get("model"), m.engine_kwargs.get("api_key_env"))
    return replace(spec, deployment=None, upstream=upstream)


class Upstream:
    """A `serve.pool.MemberClient` over HTTP."""

    def __init__(self, spec: MemberSpec, timeout_s: float = 600.0):
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
        try:
            async with self._http.post(self.url + path, json=dict(body, model=self.upstream_model)) as response:
                status = response.status
                if status == 429:  # it is there, only busy: the next member may take it, or the client waits
                    raise MemberFull("HTTP 429")
                if status >= 500:
                    raise MemberGone(f"HTTP {status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise MemberGone(f"{type(e).__name__}: {e}") from None
        if status == 200 and isinstance(answer, dict):
            answer["model"] = self.model_id
            wire.with_lineage(answer, self.lineage)
        return {"status": status, "body": answer}

    async def card(self) -> dict:
        return wire.model_card(self.model_id, self.context_length, self.lineage, "openai")

    async def stats(self) -> Optional[dict]:
        return None  # an external server's statistics are its own
