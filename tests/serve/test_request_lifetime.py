"""A request frees all of its work at once when it is refused, fails or is cancelled (issue 11):
in the replica (every prompt of a batch), from the ingress to the replica (a Serve handle call),
and from a client that disconnects to the router (the direct front). Faults inside a replica are
500s with an error id. No Ray and no model: a fake engine injected into the real `ModelServer`."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import asdict

import pytest

from serve.config import ModelConfig
from serve.engines.base import EngineInfo, GenerationRequest, GenerationResult, PromptTooLong, Sample
from tests.conftest import free_port
from tests.serve.fakes import FakeEngine, FakeMember, member, router


class HeldEngine(FakeEngine):
    """An engine whose requests run until released; it counts what runs and what was cancelled,
    and refuses prompts holding the token 666 (as llama.cpp refuses ids past its vocabulary)."""

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.running = 0  # a count here, not the base's flag
        self.started = 0
        self.cancelled = 0
        self.release = asyncio.Event()
        self.fail_with = None

    async def start(self) -> EngineInfo:
        self.info = EngineInfo("held", "held.gguf", "ef" * 32, self.config.context_length)
        return self.info

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        if len(request.prompt_tokens) >= self.config.context_length:
            raise PromptTooLong("too long")
        self.started += 1
        self.running += 1
        try:
            await asyncio.sleep(0.01)  # the prompts of a batch start together
            if self.fail_with is not None:
                raise self.fail_with
            if 666 in request.prompt_tokens:
                raise ValueError("prompt: token id 666 is not in this model's vocabulary")
            await self.release.wait()
            return GenerationResult([Sample("ok", "stop", 1)] * request.n, len(request.prompt_tokens))
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    def stats(self) -> dict:
        return {"running": self.running}

    def healthy(self) -> bool:
        return True

    async def shutdown(self) -> None:
        pass


async def held_server():
    from serve.model_server import ModelServer

    return await ModelServer.create(asdict(ModelConfig(id="judge", context_length=64)), "held-0", engine_cls=HeldEngine)


def test_a_batch_with_one_prompt_too_long_is_refused_before_any_prompt_starts():
    async def scenario():
        server = await held_server()
        reply = await server.completions({"model": "judge", "prompt": ["ok", "x" * 100, "fine"], "max_tokens": 8})
        return reply, server.engine

    reply, engine = asyncio.run(scenario())
    assert reply["status"] == 400 and reply["body"]["error"]["code"] == "context_length_exceeded"
    assert "prompt 1" in reply["body"]["error"]["message"]
    assert engine.started == 0  # nothing generated for a request that is refused anyway


def test_a_prompt_refused_mid_batch_cancels_the_others_before_the_answer():
    async def scenario():
        server = await held_server()
        reply = await server.completions({"model": "judge", "prompt": [[1, 2], [1, 666], [3, 4]], "max_tokens": 8})
        return reply, server.engine.running, server.engine.cancelled

    reply, running, cancelled = asyncio.run(scenario())
    assert reply["status"] == 400 and "vocabulary" in reply["body"]["error"]["message"]
    assert running == 0 and cancelled == 2  # the siblings stopped, not left generating unseen


def test_a_cancelled_request_cancels_every_prompt_in_the_engine():
    async def scenario():
        server = await held_server()
        task = asyncio.ensure_future(server.completions({"model": "judge", "prompt": ["a", "b", "c"], "n": 2}))
        while server.engine.running < 3:
            await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return server.engine.running, server.engine.cancelled

    assert asyncio.run(scenario()) == (0, 3)


def test_a_fault_in_the_replica_is_a_500_with_an_error_id_and_no_internals(caplog):
    async def scenario():
        server = await held_server()
        server.engine.fail_with = RuntimeError("llama_decode returned -3 at /srv/models/secret.gguf")
        return await server.completions({"model": "judge", "prompt": "hi"})

    with caplog.at_level(logging.ERROR):
        reply = asyncio.run(scenario())
    assert reply["status"] == 500 and reply["body"]["error"]["code"] == "internal_error"
    message = reply["body"]["error"]["message"]
    assert "secret" not in message and "RuntimeError" not in message
    error_id = message.split()[2].rstrip(";")
    assert any(error_id in r.getMessage() and r.exc_info for r in caplog.records)


def test_a_logit_bias_key_of_thousands_of_digits_is_a_400_in_the_replica():
    """It was a 500 (int() refuses more than 4,300 digits), which clients then retried."""
    async def scenario():
        server = await held_server()
        return await server.completions({"model": "judge", "prompt": "hi", "logit_bias": {"9" * 5000: 1}})

    reply = asyncio.run(scenario())
    assert reply["status"] == 400 and reply["body"]["error"]["param"] == "logit_bias"


# -- from the ingress to the replica ------------------------------------------------------------------
class HangingResponse:
    def __init__(self):
        self.cancelled = False

    def __await__(self):
        return asyncio.sleep(3600).__await__()

    def cancel(self):
        self.cancelled = True


class HangingHandle:
    def __init__(self):
        self.responses = []

    def __getattr__(self, method):
        handle = self

        class Method:
            def remote(self, body):
                handle.responses.append(HangingResponse())
                return handle.responses[-1]

        return Method()


def test_a_cancelled_call_to_a_deployment_cancels_the_request_on_its_replica():
    from serve.members import DeploymentMember

    handle = HangingHandle()

    async def scenario():
        task = asyncio.ensure_future(DeploymentMember(handle).call("completions", {"model": "m"}))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    assert [r.cancelled for r in handle.responses] == [True]


# -- the direct front ------------------------------------------------------------------------------
def direct_front(route):
    """The direct front's listener on a free port, in this process: (port, start -> its runner)."""
    from serve.ingress import listen_direct

    port = free_port()

    async def start():
        return await listen_direct(route, "127.0.0.1", port)

    return port, start


def test_the_direct_front_refuses_a_body_past_the_bound_with_an_openai_413():
    import httpx

    from serve.openai import MAX_BODY_BYTES

    a = FakeMember("a")
    route = router(member(a))
    port, start = direct_front(route)

    async def scenario():
        runner = await start()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                big = json.dumps({"model": "judge", "prompt": "x" * (MAX_BODY_BYTES + 10)})
                refused = await client.post(f"http://127.0.0.1:{port}/v1/completions", content=big)
                good = await client.post(f"http://127.0.0.1:{port}/v1/completions",
                                         json={"model": "judge", "prompt": "x"})
                wrong = await client.put(f"http://127.0.0.1:{port}/v1/completions", content=b"{}")
                return refused, good, wrong
        finally:
            await runner.cleanup()

    refused, good, wrong = asyncio.run(scenario())
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "request_too_large"
    assert good.status_code == 200 and len(a.calls) == 1
    assert wrong.status_code == 404 and wrong.json()["error"]["message"]


def test_a_client_that_disconnects_from_the_direct_front_cancels_its_request():
    class Watched(FakeMember):
        async def call(self, method, body):
            self.in_flight += 1
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                self.cancelled = True
                raise
            finally:
                self.in_flight -= 1

    a = Watched("a")
    a.cancelled = False
    m = member(a)
    route = router(m)
    port, start = direct_front(route)

    async def scenario():
        runner = await start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            payload = json.dumps({"model": "judge", "prompt": "x"}).encode()
            writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
            await writer.drain()
            for _ in range(200):
                if a.in_flight:
                    break
                await asyncio.sleep(0.01)
            assert a.in_flight == 1
            writer.close()
            for _ in range(200):
                if not a.in_flight:
                    break
                await asyncio.sleep(0.01)
            return a.in_flight, m.outstanding
        finally:
            await runner.cleanup()

    in_flight, outstanding = asyncio.run(scenario())
    assert in_flight == 0 and a.cancelled and outstanding == 0
