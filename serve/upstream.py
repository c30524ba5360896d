"""Pool members that are external OpenAI servers (engine `openai`), called by the ingress itself.

An existing vLLM server on a GPU box, a llamafile, a hosted API: it joins a judge pool like a
Ray-deployed member, but needs no replica of its own - the ingress forwards the body over HTTP,
renaming the model if the upstream calls it something else, and answers with the same
{"status", "body"} contract and lineage as the other engines.
"""

from __future__ import annotations

import os
from typing import Optional

import aiohttp

from serve.errors import error_body


class UpstreamUnreachable(Exception):
    """The upstream did not answer (connection refused, timeout, 5xx): try another member."""


class Upstream:
    def __init__(self, url: str, model_id: str, member: str, upstream_model: Optional[str] = None,
                 api_key_env: Optional[str] = None, max_connections: int = 256, timeout_s: float = 600.0):
        self.url = url.rstrip("/")
        self.model_id = model_id
        self.upstream_model = upstream_model or model_id
        key = os.environ.get(api_key_env) if api_key_env else None
        self.lineage = {"backend": "openai", "model": model_id, "member": member, "model_file": self.upstream_model,
                        "upstream": self.url}
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout_s, connect=10.0)
        self._http: Optional[aiohttp.ClientSession] = None  # made on the serving event loop, on first use

    async def call(self, method: str, body: dict) -> dict:
        path = {"completions": "/completions", "chat": "/chat/completions"}.get(method)
        if path is None:  # /tokenize is not part of the OpenAI API; upstreams need not have it
            return {"status": 404, "body": error_body(404, f"'{method}' is not forwarded to upstream members")}
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers, timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._max_connections),
            )
        try:
            async with self._http.post(self.url + path, json=dict(body, model=self.upstream_model)) as response:
                status = response.status
                if status >= 500 or status == 429:
                    raise UpstreamUnreachable(f"HTTP {status}")
                answer = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            raise UpstreamUnreachable(f"{type(e).__name__}: {e}") from None
        if status == 200 and isinstance(answer, dict):
            answer["model"] = self.model_id
            answer["judgefleet"] = self.lineage
        return {"status": status, "body": answer}

    def card(self, context_length: int) -> dict:
        return {"id": self.model_id, "object": "model", "owned_by": "judgefleet", "max_model_len": context_length,
                "judgefleet": dict(self.lineage, engine="openai")}
