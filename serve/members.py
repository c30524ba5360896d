"""One way to build a pool member, whatever its engine: `ModelConfig` -> `MemberSpec` -> `Member`.

Each engine registers a builder ("module:function", imported only when a model uses that engine,
since each engine is a heavy optional install) that fills in its part of a `MemberSpec`: the
bound Serve deployment of its replicas, or the settings of an external server it forwards to.
`serve.app` builds the specs; the ingress turns each into a routing `Member` that it reaches
through one `MemberClient` (`DeploymentMember` or `serve.upstream.Upstream`), whatever the engine.

No Ray at import: Ray is imported by the builders and by `DeploymentMember` when they run.
"""

from __future__ import annotations

import asyncio
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from serve.config import ModelConfig, ServeConfig, member_names
from serve.errors import MemberFull, MemberGone
from serve.pool import Member


@dataclass(frozen=True)
class EngineEntry:
    """How members of one engine are built: "module:function" (ModelConfig, MemberSpec) -> MemberSpec,
    and for engines hosted in a `ModelServer` replica, "module:Class" of the engine itself."""

    builder: str
    engine_cls: Optional[str] = None


ENGINES: Dict[str, EngineEntry] = {
    "llama.cpp": EngineEntry("serve.model_server:build_member", "serve.engines.llamacpp:LlamaCppEngine"),
    "vllm": EngineEntry("serve.engines.vllm:build_member"),  # Ray Serve LLM's own server
    "openai": EngineEntry("serve.upstream:build_member"),  # an external server, called by the ingress
}


@dataclass(frozen=True)
class UpstreamSettings:
    """An external OpenAI server (engine `openai`)."""

    url: str
    upstream_model: Optional[str] = None  # its name for the model; default: the pool's model id
    api_key_env: Optional[str] = None  # the variable holding its API key


@dataclass(frozen=True)
class MemberSpec:
    """One pool member as the builder describes it to the ingress."""

    model_id: str
    name: str
    engine: str
    deployment: Optional[str]  # its Serve deployment; None for an external server
    max_ongoing: int
    max_queued: int
    replicas: int  # running replicas to assume until the controller reports
    context_length: int
    # The bound Serve app of its replicas (Serve hands the ingress a DeploymentHandle in its
    # place); None for an external server.
    app: Any = None
    upstream: Optional[UpstreamSettings] = None
    # autoscaling min_replicas 0: with no replica the router still wakes it (`serve.pool`).
    scales_to_zero: bool = False


def member_spec(m: ModelConfig, member: str) -> MemberSpec:
    """The member `m` describes, built by its engine's builder."""
    replicas = m.autoscaling.min_replicas if m.autoscaling else m.replicas
    spec = MemberSpec(
        model_id=m.id, name=member, engine=m.engine, deployment=deployment_name(m.id, member),
        max_ongoing=m.max_ongoing_requests, max_queued=m.max_queued_requests,
        replicas=max(replicas, 1), context_length=m.context_length,
        scales_to_zero=m.autoscaling is not None and m.autoscaling.min_replicas == 0,
    )
    return _load(_registered(m.engine).builder)(m, spec)


def member_specs(cfg: ServeConfig) -> Dict[str, List[MemberSpec]]:
    """Every pool of a validated config: model id -> its members, in config order."""
    pools: Dict[str, List[MemberSpec]] = {}
    for m, member in zip(cfg.models, member_names(cfg)):
        pools.setdefault(m.id, []).append(member_spec(m, member))
    return pools


def engine_class(engine: str) -> type:
    """The engine class a `ModelServer` replica hosts for `engine`."""
    entry = _registered(engine)
    if entry.engine_cls is None:
        raise ValueError(f"engine '{engine}' does not run in a ModelServer replica")
    return _load(entry.engine_cls)


def _registered(engine: str) -> EngineEntry:
    if engine not in ENGINES:
        raise ValueError(f"engine '{engine}' is not one of {', '.join(ENGINES)}")
    return ENGINES[engine]


def _load(path: str) -> Callable:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


# -- Serve deployment settings, shared by the builders ------------------------------------------
def deployment_name(model_id: str, member: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model_id}--{member}")


def deployment_options(m: ModelConfig, name: str) -> Dict[str, Any]:
    options: Dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests,
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
    }
    if m.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": m.autoscaling.min_replicas,
            "max_replicas": m.autoscaling.max_replicas,
            "target_ongoing_requests": m.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = m.replicas
    return options


def actor_options(m: ModelConfig) -> Dict[str, Any]:
    options: Dict[str, Any] = {"num_cpus": m.num_cpus}
    if m.num_gpus:
        options["num_gpus"] = m.num_gpus
    if m.resources:
        options["resources"] = dict(m.resources)
    if m.accelerator_type:
        options["accelerator_type"] = m.accelerator_type
    if m.labels:
        options["label_selector"] = dict(m.labels)
    if m.env:
        options["runtime_env"] = {"env_vars": dict(m.env)}
    return options


# -- the ingress side: specs -> routing members ------------------------------------------------
class DeploymentMember:
    """A member that is a Serve deployment: its handle, with Ray's failures in the router's terms."""

    def __init__(self, handle):
        self._handle = handle

    async def call(self, method: str, body: dict) -> dict:
        response = getattr(self._handle, method).remote(body)
        try:
            return await response
        except asyncio.CancelledError:
            # The caller is gone (client disconnected, or the route gave up): awaiting alone would
            # leave the replica generating for no one, so cancel the request there too.
            response.cancel()
            raise
        except Exception as e:
            failure = _ray_failure(e)
            if failure is None:
                raise
            raise failure(type(e).__name__) from e

    async def card(self) -> dict:
        return await self._handle.card.remote()

    async def stats(self) -> Optional[dict]:
        return await self._handle.stats.remote()


def _ray_failure(e: Exception) -> Optional[type]:
    """MemberFull (its queue is full), MemberGone (its replica died), or None (a bug)."""
    from ray.exceptions import ActorUnavailableError, RayActorError
    from ray.serve.exceptions import BackPressureError

    if isinstance(e, BackPressureError):
        return MemberFull
    if isinstance(e, (RayActorError, ActorUnavailableError)):
        return MemberGone
    return None


def pool_member(spec: MemberSpec) -> Member:
    """The routing state and client of one member, in the ingress."""
    if spec.upstream is not None:
        from serve.upstream import Upstream

        client = Upstream(spec)
    else:
        client = DeploymentMember(spec.app)
    # A deployment's replica count is a guess until the controller reports it (readiness waits).
    return Member(spec.name, spec.engine, client, spec.deployment, spec.max_ongoing, spec.max_queued,
                  context_length=spec.context_length, replicas=spec.replicas, scales_to_zero=spec.scales_to_zero,
                  reported=spec.deployment is None)


def pool_members(pools: Dict[str, List[MemberSpec]]) -> Dict[str, List[Member]]:
    return {model_id: [pool_member(spec) for spec in specs] for model_id, specs in pools.items()}
