"""Judging with the engine in this process: no Ray, no HTTP - the ceiling the route is held to.

`InProcessClient` has the `post`/`get` of `jobs.client.http.OpenAIClient`, but hands each body
straight to a model replica living in this process (`serve.endpoint.start_in_process`), so
`RowJudge` runs the very same protocol (feedback, constrained score token) against the very same
engine, minus the route.
"""

from __future__ import annotations

from typing import Tuple

from jobs.client.http import ApiError, PrioritySlots, status_reason
from serve import wire


class InProcessClient:
    def __init__(self, server, max_in_flight: int = 64):
        self.server = server
        self._slots = PrioritySlots(max_in_flight)  # the same bound and order as the HTTP client's

    @classmethod
    async def start(cls, model_config, max_in_flight: int = 64) -> "InProcessClient":
        from serve.endpoint import start_in_process

        return cls(await start_in_process(model_config), max_in_flight)

    async def post(self, path: str, body: dict, priority: float = 0.0, headers=None) -> Tuple[dict, dict]:
        # The client's paths are relative to the API base (".../v1"), except the route's /tokenize.
        method = wire.POST_METHODS[path if path.startswith("/") else "/v1/" + path]
        await self._slots.acquire(priority)
        try:
            reply = await getattr(self.server, method)(body)
        finally:
            self._slots.release()
        if reply["status"] != 200:
            error = reply["body"]["error"]
            raise ApiError(f"HTTP {reply['status']}: {error['message']}", reply["status"],
                           reason=status_reason(reply["status"], error.get("code")))
        return reply["body"], {}

    async def get(self, path: str) -> Tuple[dict, dict]:
        return {"data": [self.server.card()]}, {}

    async def aclose(self) -> None:
        await self.server.engine.shutdown()
