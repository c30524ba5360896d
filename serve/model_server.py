"""One model replica: an engine behind the OpenAI request/response handling.

The engine class is injected (`engine_cls`; by default the one `serve.members` registers for the
model's engine), so tests and other engines reuse the same replica; it uses the engine only
through `serve.engines.base.Engine`. Every response carries the `serve.wire.Lineage` of the
backend, replica, node and model file that answered, so a scored row can say exactly which
weights judged it.

A request is all or nothing: every prompt is checked against the context before any starts; when one
fails, or the request is cancelled (its client went away), every prompt still generating is
cancelled in the engine at once - work nobody will read would otherwise hold slots unseen by
the route's backpressure.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, replace
from typing import List, Optional

from serve import openai as oa
from serve import wire
from serve.config import ModelConfig
from serve.engines.base import Engine, GenerationRequest, PromptTooLong
from serve.errors import OpenAIError, internal_error
from serve.members import MemberSpec, actor_options, deployment_options, engine_class
from serve.process_memory import replica_memory

log = logging.getLogger(__name__)


def build_member(m: ModelConfig, spec: MemberSpec) -> MemberSpec:
    """The engine registry's builder for engines hosted here: one Serve deployment of replicas."""
    from ray import serve

    app = serve.deployment(ModelServer).options(
        ray_actor_options=actor_options(m), **deployment_options(m, spec.deployment)
    ).bind(asdict(m), spec.name)
    return replace(spec, app=app)


class ModelServer:
    async def __init__(self, model_config: dict, member: str = "", engine_cls=None):
        # Ray actors may construct asynchronously; plain Python cannot, hence `create` below.
        self._setup(model_config, member, engine_cls)
        await self._start()

    @classmethod
    async def create(cls, model_config: dict, member: str = "", engine_cls=None) -> "ModelServer":
        """A started server outside Ray (e.g. the in-process ceiling of `judgefleet bench`); its
        owner shuts the engine down (`await server.engine.shutdown()`)."""
        server = _OutsideServe.__new__(_OutsideServe)
        server._setup(model_config, member, engine_cls)
        await server._start()
        return server

    def _setup(self, model_config: dict, member: str, engine_cls) -> None:
        fields = {k: v for k, v in model_config.items() if k != "autoscaling"}
        self.config = ModelConfig(**fields)
        self.member = member
        self.engine: Engine = (engine_cls or engine_class(self.config.engine))(self.config)

    async def _start(self) -> None:
        info = await self.engine.start()
        self.lineage = wire.Lineage(
            backend=info.backend, model=self.config.id, member=self.member, model_file=info.model_file,
            model_sha256=info.model_sha256, replica=replica_id(), node=node_id(),
        )
        self._chat_template = _compile_template(info.chat_template) if info.chat_template else None

    def card(self) -> dict:
        """The /v1/models entry for this model."""
        return wire.model_card(self.config.id, self.config.context_length, self.lineage, self.config.engine)

    # Public methods answer {"status", "body"}: a client's mistake is a reply, not an exception
    # (Serve would log an exception with a traceback for every bad request).
    async def completions(self, body: dict) -> dict:
        return await _reply(self._completions(body))

    async def chat(self, body: dict) -> dict:
        return await _reply(self._chat(body))

    async def tokenize(self, body: dict) -> dict:
        return await _reply(self._tokenize_request(body))

    async def _completions(self, body: dict) -> dict:
        req: oa.CompletionRequest = oa.parse(oa.CompletionRequest, body)
        req.unsupported()
        req.check_fits(self.config.context_length)
        params = req.sampling(req.max_tokens, req.logprobs)
        requests = [GenerationRequest(await self._prompt_tokens(p), params, req.n, p if isinstance(p, str) else None)
                    for p in req.prompt]
        results = await self._generate_all(requests)
        return oa.completion_body(self.config.id, results, self.lineage)

    async def _chat(self, body: dict) -> dict:
        req: oa.ChatRequest = oa.parse(oa.ChatRequest, body)
        req.unsupported()
        req.check_fits(self.config.context_length)
        if self._chat_template is None:
            raise OpenAIError(
                400,
                f"model '{self.config.id}' has no chat template ({self.lineage.model_file} is a base "
                "model); use /v1/completions with a formatted prompt",
                "messages",
            )
        text = self._render_chat(req)
        top = (req.top_logprobs or 0) if req.logprobs else None
        max_tokens = req.max_completion_tokens or req.max_tokens or min(512, self.config.context_length - 1)
        params = req.sampling(max_tokens, top)
        (result,) = await self._generate_all([GenerationRequest(await self._prompt_tokens(text, chat=True), params,
                                                                req.n, text)])
        return oa.chat_body(self.config.id, result, self.lineage)

    async def _tokenize_request(self, body: dict) -> dict:
        req: oa.TokenizeRequest = oa.parse(oa.TokenizeRequest, body)
        req.check_fits(self.config.context_length)
        tokens = await _off_loop(self.engine.tokenize, req.prompt, add_special=req.add_special_tokens)
        return {"count": len(tokens), "max_model_len": self.config.context_length, "tokens": tokens}

    def stats(self) -> dict:
        return dict(self.engine.stats(), **replica_memory(), replica=self.lineage.replica)

    async def check_health(self) -> None:
        if not self.engine.healthy():
            raise RuntimeError("engine is not running")

    async def __del__(self):
        await self.engine.shutdown()

    # -- helpers ------------------------------------------------------------------------
    async def _prompt_tokens(self, prompt, chat: bool = False) -> list:
        """Token ids of a prompt given as text (tokenized) or as token ids (as they are)."""
        if not isinstance(prompt, str):
            return list(prompt)
        # A chat template writes BOS itself when the model wants it.
        add_special = not (chat and prompt.startswith(self.engine.bos_text()))
        return await _off_loop(self.engine.tokenize, prompt, add_special=add_special)

    async def _generate_all(self, requests: List[GenerationRequest]) -> list:
        """Every request's result, or none: all are checked first; one failing (or this being
        cancelled) cancels the others in the engine before the error is answered."""
        context = self.config.context_length
        for i, request in enumerate(requests):
            if len(request.prompt_tokens) >= context:
                raise OpenAIError(400, f"prompt {i} is {len(request.prompt_tokens)} tokens; this model's context is "
                                  f"{context} tokens per sequence, with room needed for the answer",
                                  "prompt", wire.CONTEXT_LENGTH_EXCEEDED)
        tasks = [asyncio.ensure_future(self._generate(r)) for r in requests]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)  # each engine job is cancelled by now
            raise

    async def _generate(self, request: GenerationRequest):
        try:
            return await self.engine.generate(request)
        except PromptTooLong as e:
            raise OpenAIError(400, str(e), "prompt", wire.CONTEXT_LENGTH_EXCEEDED) from None
        except ValueError as e:
            raise OpenAIError(400, str(e)) from None

    def _render_chat(self, req) -> str:
        try:
            return self._chat_template.render(
                messages=[m.model_dump() for m in req.messages],
                add_generation_prompt=True,
                bos_token=self.engine.bos_text(),
                eos_token=self.engine.eos_text(),
            )
        except Exception as e:  # templates raise on role orders they do not support
            raise OpenAIError(400, f"the model's chat template refused these messages: {e}", "messages") from None


async def _reply(work) -> dict:
    try:
        return {"status": 200, "body": await work}
    except OpenAIError as e:
        return {"status": e.status, "body": e.body()}
    except Exception:  # noqa: BLE001 - a fault here, not the client's: an id, details only in the log
        return {"status": 500, "body": internal_error(log, "a model request")}


# Text up to this many characters is tokenized on the event loop; longer text in a thread, so
# one long prompt does not hold up every other request of the replica (llama.cpp releases the GIL).
_TOKENIZE_INLINE_CHARS = 4096


async def _off_loop(tokenize, text: str, add_special: bool) -> list:
    if len(text) <= _TOKENIZE_INLINE_CHARS:
        return tokenize(text, add_special=add_special)
    return await asyncio.to_thread(tokenize, text, add_special)


class _OutsideServe(ModelServer):
    """Serve awaits the async `__del__` at replica shutdown; outside Serve, Python would call it
    and drop the coroutine ("never awaited"). The owner shuts the engine down instead."""

    def __del__(self) -> None:
        pass


def _compile_template(source: str):
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise ValueError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def replica_id() -> Optional[str]:
    try:
        from ray import serve

        return serve.get_replica_context().replica_id.unique_id
    except Exception:  # outside Serve (direct tests)
        return None


def node_id() -> Optional[str]:
    try:
        import ray

        if not ray.is_initialized():  # asking would start a Ray of its own
            return None
        return ray.get_runtime_context().get_node_id()
    except Exception:
        return None
