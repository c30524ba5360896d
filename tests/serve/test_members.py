"""Building pool members (one path for every engine), the engine protocol, and the replica's use
of it - with a fake engine registered like a real one, so the production path runs without one."""

from __future__ import annotations

import asyncio
import inspect
from dataclasses import asdict

import pytest

from serve import members, wire
from serve.config import ENGINES, AutoscalingConfig, ModelConfig, ServeConfig
from serve.engines.base import Engine
from serve.errors import MemberFull, MemberGone
from tests.serve.fakes import FakeEngine


def protocol_methods(protocol) -> set:
    return {name for name, _ in inspect.getmembers(protocol, inspect.isfunction) if not name.startswith("_")}


def test_every_configurable_engine_has_a_builder():
    assert set(members.ENGINES) == set(ENGINES)


def test_one_path_builds_members_of_every_engine():
    cfg = ServeConfig(models=[
        ModelConfig(id="judge", engine="llama.cpp", name="cpu", replicas=2, max_ongoing_requests=3, max_queued_requests=5),
        ModelConfig(id="judge", engine="openai", model="http://gpu-box:8000/v1", context_length=8192,
                    engine_kwargs={"model": "prometheus", "api_key_env": "GPU_KEY"}),
        ModelConfig(id="other judge", autoscaling=AutoscalingConfig(min_replicas=0, max_replicas=2)),
    ])
    pools = members.member_specs(cfg)
    assert list(pools) == ["judge", "other judge"]
    cpu, remote = pools["judge"]
    assert (cpu.name, cpu.engine, cpu.deployment, cpu.replicas, cpu.max_ongoing, cpu.max_queued) == (
        "cpu", "llama.cpp", "judge--cpu", 2, 3, 5)
    assert cpu.app is not None and cpu.upstream is None
    assert (remote.name, remote.deployment, remote.app, remote.context_length) == ("openai-1", None, None, 8192)
    assert remote.upstream == members.UpstreamSettings("http://gpu-box:8000/v1", "prometheus", "GPU_KEY")
    (scaled,) = pools["other judge"]
    assert scaled.deployment == "other-judge--llamacpp-0" and scaled.replicas == 1


def test_the_llama_cpp_engine_comes_from_the_registry_and_implements_the_protocol():
    from serve.engines.llamacpp import LlamaCppEngine

    assert members.engine_class("llama.cpp") is LlamaCppEngine
    assert protocol_methods(Engine) <= protocol_methods(LlamaCppEngine)
    assert protocol_methods(Engine) <= protocol_methods(FakeEngine)
    with pytest.raises(ValueError, match="does not run in a ModelServer"):
        members.engine_class("vllm")
    with pytest.raises(ValueError, match="not one of"):
        members.engine_class("tgi")


def test_a_replica_uses_its_engine_only_through_the_protocol(monkeypatch):
    from serve.model_server import ModelServer

    monkeypatch.setitem(members.ENGINES, "fake", members.EngineEntry(
        "serve.model_server:build_member", f"{__name__}:FakeEngine"))

    async def scenario():
        config = asdict(ModelConfig(id="judge", engine="fake", context_length=512))
        server = await ModelServer.create(config, "fake-0")
        assert isinstance(server.engine, FakeEngine)
        reply = await server.completions({"model": "judge", "prompt": ["a", "b"], "n": 2})
        card = server.card()
        tokens = await server.tokenize({"model": "judge", "prompt": "hi"})
        stats = server.stats()
        await server.check_health()
        await server.engine.shutdown()
        with pytest.raises(RuntimeError, match="not running"):
            await server.check_health()
        return reply, card, tokens, stats

    reply, card, tokens, stats = asyncio.run(scenario())
    assert reply["status"] == 200 and len(reply["body"]["choices"]) == 4
    lineage = wire.lineage_of(reply["body"])
    # Outside Serve there is no replica id; the node is known only where this process joined a Ray.
    assert lineage == wire.Lineage(backend="fake", model="judge", member="fake-0", model_file="fake.gguf",
                                   model_sha256="cd" * 32, node=lineage.node)
    assert wire.is_route_card(card) and wire.max_model_len(card) == 512 and card[wire.LINEAGE_FIELD]["engine"] == "fake"
    assert tokens == {"status": 200, "body": {"count": 3, "max_model_len": 512, "tokens": [1, 104, 105]}}
    assert stats.pop("rss_bytes") <= stats.pop("peak_rss_bytes")  # the replica's own memory (serve.process_memory)
    assert stats == {"running": 0, "replica": None}


class _Handle:
    """A Serve handle whose every call raises `error`."""

    def __init__(self, error: Exception):
        self.error = error

    def __getattr__(self, method):
        handle = self

        class _Method:
            async def remote(self, body):
                raise handle.error

        return _Method()


def ray_failure(kind: str) -> Exception:
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError

    return {
        "backpressure": lambda: BackPressureError(num_queued_requests=3, max_queued_requests=3),
        "actor died": lambda: RayActorError(),
        "actor unavailable": lambda: ActorUnavailableError("unreachable", None),
        "a bug": lambda: KeyError("a bug"),
    }[kind]()


@pytest.mark.parametrize("kind, expected", [
    ("backpressure", MemberFull), ("actor died", MemberGone), ("actor unavailable", MemberGone), ("a bug", KeyError),
])
def test_a_deployment_members_ray_failures_become_member_errors(kind, expected):
    member = members.DeploymentMember(_Handle(ray_failure(kind)))
    with pytest.raises(expected):
        asyncio.run(member.call("completions", {}))


@pytest.mark.parametrize("status, expected", [(429, MemberFull), (503, MemberGone), (500, MemberGone)])
def test_an_upstream_that_is_busy_is_full_and_one_that_fails_is_gone(stub, status, expected):
    """A 429 from an external member means "not now" (try another member, or tell the client to
    wait); a 5xx means it is unusable for a moment (marked down)."""
    from serve.upstream import Upstream

    stub.behaviour.fail_first, stub.behaviour.fail_status = 1, status
    member = ModelConfig(id="judge", name="ext", engine="openai", model=stub.url, engine_kwargs={"model": "stub-judge"})
    upstream = Upstream(members.member_spec(member, "ext"))

    async def twice():
        with pytest.raises(expected):
            await upstream.call("completions", {"model": "judge", "prompt": "hi", "max_tokens": 1})
        return await upstream.call("completions", {"model": "judge", "prompt": "hi", "max_tokens": 1})

    reply = asyncio.run(twice())
    assert reply["status"] == 200 and wire.lineage_of(reply["body"]).member == "ext"
