"""Fake pool members for the router's tests: real `MemberClient`s, so the router's own path runs,
without Ray, HTTP or an engine; and a fake engine for the replica's (`FakeEngine`)."""

from __future__ import annotations

import asyncio
import json
from typing import Dict, List, Optional, Tuple

from serve import wire
from serve.config import ModelConfig
from serve.engines.base import EngineInfo, GenerationRequest, GenerationResult, Sample
from serve.pool import Member
from serve.router import Reply, Router

MODEL = "judge"


class FakeMember:
    """Answers at once with its lineage; or raises `failure` (MemberFull, MemberGone, any error);
    or, while `gate` is set and not open, holds each request until it opens."""

    def __init__(self, name: str, model_id: str = MODEL, context_length: int = 2048):
        self.name = name
        self.context_length = context_length
        self.lineage = wire.Lineage(backend="fake", model=model_id, member=name, model_file=f"{name}.gguf",
                                    model_sha256="ab" * 32, replica=f"{name}-replica", node="node-1")
        self.failure: Optional[BaseException] = None
        self.gate: Optional[asyncio.Event] = None
        self.calls: List[Tuple[str, dict]] = []
        self.in_flight = 0
        self.peak = 0

    async def call(self, method: str, body: dict) -> dict:
        self.calls.append((method, body))
        if self.failure is not None:
            raise self.failure
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
        finally:
            self.in_flight -= 1
        answer = {"id": "cmpl-fake", "object": "text_completion", "model": body["model"],
                  "choices": [{"index": 0, "text": "ok", "finish_reason": "stop", "logprobs": None}]}
        return {"status": 200, "body": wire.with_lineage(answer, self.lineage)}

    async def card(self) -> dict:
        return wire.model_card(self.lineage.model, self.context_length, self.lineage, "fake")

    async def stats(self) -> Optional[dict]:
        return {"in_flight": self.in_flight}


def member(fake: FakeMember, max_ongoing: int = 4, max_queued: int = 0, replicas: int = 1) -> Member:
    return Member(fake.name, "fake", fake, f"d-{fake.name}", max_ongoing, max_queued,
                  context_length=fake.context_length, replicas=replicas)


def router(*members: Member, api_key: Optional[str] = None, model_id: str = MODEL) -> Router:
    return Router({model_id: list(members)}, api_key, retry_after_s=3)


def body(model_id: str = MODEL, **fields) -> bytes:
    return json.dumps({"model": model_id, "prompt": "Hello", "max_tokens": 4, **fields}).encode()


async def complete(route: Router, headers: Optional[Dict[str, str]] = None, raw: Optional[bytes] = None) -> Reply:
    return await route.handle("POST", "/v1/completions", headers or {}, body() if raw is None else raw)


def answered_by(reply: Reply) -> Optional[str]:
    lineage = wire.lineage_of(reply.body)
    return lineage.member if lineage else None


class FakeEngine:
    """An `Engine` that answers "ok" at once; tokens are the characters' code points."""

    def __init__(self, config: ModelConfig):
        self.config = config
        self.info = None
        self.running = False

    async def start(self) -> EngineInfo:
        self.running = True
        self.info = EngineInfo("fake", "fake.gguf", "cd" * 32, self.config.context_length)
        return self.info

    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        return ([1] if add_special else []) + [ord(c) for c in text]

    def bos_text(self) -> str:
        return "<bos>"

    def eos_text(self) -> str:
        return "<eos>"

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult([Sample("ok", "stop", 1)] * request.n, len(request.prompt_tokens))

    def stats(self) -> dict:
        return {"running": 0}

    def healthy(self) -> bool:
        return self.running

    async def shutdown(self) -> None:
        self.running = False
