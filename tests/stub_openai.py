"""A stand-in judge: a real HTTP server that speaks the OpenAI API, for speed, scale and faults.

Real engines cannot fail on demand or answer thousands of requests a second; this can. It
answers /v1/models, /v1/completions (feedback and score steps), /v1/chat/completions and
/tokenize, and can be told to misbehave: fail the first requests with a status and Retry-After,
answer garbage or empty text, hang, or ignore `n`.
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from aiohttp import web

from serve import wire


@dataclass
class StubBehaviour:
    model: str = "stub-judge"
    score: str = "4"  # the answer to score steps (a choice or any text)
    # prompt -> the answer to its score step, in place of `score` (e.g. by the responses it shows)
    score_for: Optional[Callable[[str], str]] = None
    feedback: str = "The response is adequate."
    chat_text: Optional[str] = None  # chat answer; default "Feedback: {feedback} [RESULT] {score}"
    fail_first: int = 0  # fail this many requests first ...
    fail_status: int = 503  # ... with this status
    retry_after: Optional[str] = None
    garbage: bool = False  # answer non-JSON with status 200
    empty: bool = False  # answer an empty text
    hang_s: float = 0.0  # sleep before answering
    ignore_n: bool = False  # answer one choice whatever `n` says
    max_model_len: Optional[int] = 4096
    chars_per_token: int = 4
    logprobs: bool = True
    delay_s: float = 0.0
    # Answer as judgefleet's route does: this lineage in every completion and in the model card
    # (serve.wire), so jobs take the stub for the route (one verdict request a row).
    lineage: Optional[dict] = None
    # Answer `stream: true` as OpenAI servers do: server-sent events, not one JSON body.
    stream_sse: bool = False


@dataclass
class StubStats:
    requests: int = 0
    by_path: Dict[str, int] = field(default_factory=dict)
    bodies: List[dict] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class StubOpenAIServer:
    def __init__(self, behaviour: Optional[StubBehaviour] = None, host: str = "127.0.0.1", keep_bodies: bool = True):
        self.behaviour = behaviour or StubBehaviour()
        self.stats = StubStats()
        self.host = host
        self.port: Optional[int] = None
        self.keep_bodies = keep_bodies
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._runner: Optional[web.AppRunner] = None
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start(self) -> "StubOpenAIServer":
        ready = threading.Event()

        def serve() -> None:
            loop = self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            app = web.Application(client_max_size=64 << 20)
            app.router.add_get("/v1/models", self._models)
            app.router.add_post("/v1/completions", self._completions)
            app.router.add_post("/v1/chat/completions", self._chat)
            app.router.add_post("/tokenize", self._tokenize)
            # A hanging handler must not hold the stop for aiohttp's default 60 s.
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, self.host, 0, backlog=1024)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(loop)  # handlers still asleep in a hang: end them quietly
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()

        self._thread = threading.Thread(target=serve, name="stub-openai", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stub server did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- handlers ---------------------------------------------------------------------------
    async def _admit(self, request: web.Request):
        """Count the request and apply the configured faults; a Response means answer that."""
        b = self.behaviour
        with self._lock:
            self.stats.requests += 1
            n = self.stats.requests
            self.stats.by_path[request.path] = self.stats.by_path.get(request.path, 0) + 1
        if n <= b.fail_first:
            headers = {"Retry-After": b.retry_after} if b.retry_after else {}
            return web.json_response({"error": {"message": "stub failure", "type": "server_error"}},
                                     status=b.fail_status, headers=headers)
        if b.hang_s:
            await asyncio.sleep(b.hang_s)
        if b.delay_s:
            await asyncio.sleep(b.delay_s)
        if b.garbage:
            return web.Response(text="<html>not json", content_type="text/html")
        return None

    async def _body(self, request: web.Request) -> dict:
        body = await request.json()
        if self.keep_bodies:
            with self._lock:
                self.stats.bodies.append(body)
        return body

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.behaviour.model, "object": "model", "owned_by": "stub"}
        if self.behaviour.max_model_len:
            card["max_model_len"] = self.behaviour.max_model_len
        if self.behaviour.lineage:
            card[wire.LINEAGE_FIELD] = dict(self.behaviour.lineage)
        return web.json_response({"object": "list", "data": [card]})

    async def _completions(self, request: web.Request) -> web.Response:
        with self._lock:
            self.stats.in_flight += 1
            self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            fault = await self._admit(request)
            if fault is not None:
                return fault
            body = await self._body(request)
            b = self.behaviour
            if b.stream_sse and body.get("stream"):
                return _sse(body)
            n = 1 if b.ignore_n else int(body.get("n") or 1)
            if isinstance(body.get("prompt"), list):  # a list of prompts: n choices for each, as OpenAI answers
                n *= len(body["prompt"])
            score_step = body.get("max_tokens") == 1 and body.get("structured_outputs")
            asked = body.get("prompt") if isinstance(body.get("prompt"), list) else [body.get("prompt")]
            per_prompt = n // len(asked)

            def choice(i: int) -> dict:
                score = b.score_for(str(asked[i // per_prompt])) if b.score_for and score_step else b.score
                text = "" if b.empty else (score if score_step else f"Feedback: {b.feedback} ")
                logprobs = None
                if score_step and body.get("logprobs") and b.logprobs and not b.empty:
                    choices = body["structured_outputs"]["choice"]
                    probs = {c: (0.7 if c == score else 0.3 / max(1, len(choices) - 1)) for c in choices}
                    logprobs = {"tokens": [text], "token_logprobs": [math.log(probs.get(text, 0.01))],
                                "top_logprobs": [{c: math.log(p) for c, p in probs.items()}], "text_offset": [0]}
                return {"index": i, "text": text, "finish_reason": "stop", "logprobs": logprobs}

            text = "" if b.empty else (b.score if score_step else f"Feedback: {b.feedback} ")
            prompt_tokens = len(str(body.get("prompt", ""))) // b.chars_per_token + 1
            completion_tokens = 1 if score_step else max(1, len(text) // b.chars_per_token)
            answer = {
                "id": "cmpl-stub", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
                "choices": [choice(i) for i in range(n)],
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens * n,
                          "total_tokens": prompt_tokens + completion_tokens * n},
            }
            if b.lineage:
                answer[wire.LINEAGE_FIELD] = dict(b.lineage, model=body.get("model"))
            return web.json_response(answer)
        finally:
            with self._lock:
                self.stats.in_flight -= 1

    async def _chat(self, request: web.Request) -> web.Response:
        fault = await self._admit(request)
        if fault is not None:
            return fault
        body = await self._body(request)
        b = self.behaviour
        n = 1 if b.ignore_n else int(body.get("n") or 1)
        text = "" if b.empty else (b.chat_text or f"Feedback: {b.feedback} [RESULT] {b.score}")
        return web.json_response({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": body.get("model"),
            "choices": [{"index": i, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                         "logprobs": None} for i in range(n)],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5 * n, "total_tokens": 10 + 5 * n},
        })

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        count = len(body.get("prompt", "")) // self.behaviour.chars_per_token + 1
        return web.json_response({"count": count, "max_model_len": self.behaviour.max_model_len, "tokens": []})


def _sse(body: dict) -> web.Response:
    chunk = {"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()), "model": body.get("model"),
             "choices": [{"index": 0, "text": "Feedback", "finish_reason": None, "logprobs": None}]}
    return web.Response(text=f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n", content_type="text/event-stream")


if __name__ == "__main__":  # a stub for manual runs and benchmarks: python tests/stub_openai.py [--as-route]
    import sys

    behaviour = StubBehaviour()
    if "--as-route" in sys.argv:  # answer as judgefleet's route does: lineage, so jobs send one verdict request a row
        behaviour.lineage = {"backend": "stub", "member": "stub", "replica": "stub"}
    server = StubOpenAIServer(behaviour, keep_bodies=False).start()
    print(json.dumps({"url": server.url}), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
