"""The OpenAI wire format: request validation and response bodies, shared by every engine.

Unknown request fields are ignored (as OpenAI and vLLM do), but every field we read is typed and
bounded, so a bad value is a 400 that names the field, never a 500 or a stuck replica.
Extensions beyond OpenAI follow vLLM: `top_k`, and `structured_outputs: {"choice": [...]}`
(or the older `guided_choice`) to constrain the answer to one of a few strings. Answers carry
the replica's lineage (`serve.wire`).
"""

from __future__ import annotations

import time
import uuid
from typing import Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from serve import wire
from serve.engines.base import GenerationResult, SamplingParams
from serve.errors import OpenAIError

MAX_LOGPROBS = 20
MAX_N = 16


class StructuredOutputs(BaseModel):
    model_config = ConfigDict(extra="ignore")
    choice: Optional[List[str]] = Field(default=None, min_length=1, max_length=64)


class _SamplingFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1, le=1_000_000)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: Optional[Union[str, List[str]]] = None
    seed: Optional[int] = None
    stream: bool = False
    logit_bias: Optional[Dict[str, float]] = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    structured_outputs: Optional[StructuredOutputs] = None
    guided_choice: Optional[List[str]] = Field(default=None, min_length=1, max_length=64)

    @field_validator("stop")
    @classmethod
    def _stops(cls, v):
        stops = [v] if isinstance(v, str) else (v or [])
        if len(stops) > 16 or any(not s for s in stops):
            raise ValueError("stop takes up to 16 non-empty strings")
        return stops

    def unsupported(self) -> None:
        if self.stream:
            raise OpenAIError(400, "stream=true is not supported by this route; send stream=false", "stream")
        if self.presence_penalty or self.frequency_penalty:
            raise OpenAIError(400, "presence_penalty and frequency_penalty are not supported; leave them 0", "presence_penalty")

    def sampling(self, max_tokens: int, logprobs: Optional[int]) -> SamplingParams:
        choices = (self.structured_outputs.choice if self.structured_outputs else None) or self.guided_choice
        bias = {}
        for key, value in (self.logit_bias or {}).items():
            if not key.lstrip("-").isdigit():
                raise OpenAIError(400, f"logit_bias keys are token ids; got {key!r}", "logit_bias")
            bias[int(key)] = max(-100.0, min(100.0, value))
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=list(self.stop or []),
            logprobs=logprobs,
            choices=choices,
            logit_bias=bias,
        )


class CompletionRequest(_SamplingFields):
    prompt: Union[str, List[str]]
    max_tokens: Optional[int] = Field(default=16, ge=1, le=1_000_000)
    logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    best_of: Optional[int] = None
    suffix: Optional[str] = None

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v):
        prompts = [v] if isinstance(v, str) else v
        if not prompts or len(prompts) > 64:
            raise ValueError("prompt must be a string or a list of 1-64 strings")
        return prompts

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise OpenAIError(400, "echo=true is not supported by this route", "echo")
        if self.best_of not in (None, 1):
            raise OpenAIError(400, "best_of is not supported; use n", "best_of")
        if self.suffix:
            raise OpenAIError(400, "suffix is not supported by this route", "suffix")


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str


class ChatRequest(_SamplingFields):
    messages: List[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1, le=1_000_000)
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)


class TokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str = Field(min_length=1)
    prompt: str
    add_special_tokens: bool = True


def parse(model_cls, body) -> BaseModel:
    """Validate a JSON body; a failure is a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        return model_cls.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or None
        raise OpenAIError(400, f"{field}: {err['msg']}" if field else err["msg"], field) from None


def usage(results: List[GenerationResult]) -> dict:
    prompt = sum(r.prompt_tokens for r in results)
    completion = sum(s.completion_tokens for r in results for s in r.samples)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": sum(r.cached_tokens for r in results)},
    }


def completion_body(model: str, results: List[GenerationResult], lineage: wire.Lineage) -> dict:
    choices = []
    for result in results:
        for sample in result.samples:
            logprobs = None
            if sample.logprobs is not None:
                lp = sample.logprobs
                offsets, pos = [], 0
                for tok in lp.tokens:
                    offsets.append(pos)
                    pos += len(tok)
                logprobs = {
                    "tokens": lp.tokens,
                    "token_logprobs": lp.token_logprobs,
                    "top_logprobs": lp.top_logprobs,
                    "text_offset": offsets,
                }
            choices.append(
                {"index": len(choices), "text": sample.text, "finish_reason": sample.finish_reason, "logprobs": logprobs}
            )
    body = {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage(results),
    }
    return wire.with_lineage(body, lineage)


def chat_body(model: str, result: GenerationResult, lineage: wire.Lineage) -> dict:
    choices = []
    for i, sample in enumerate(result.samples):
        logprobs = None
        if sample.logprobs is not None:
            lp = sample.logprobs
            logprobs = {
                "content": [
                    {
                        "token": tok,
                        "logprob": logprob,
                        "bytes": list(tok.encode("utf-8")),
                        "top_logprobs": [
                            {"token": t, "logprob": v, "bytes": list(t.encode("utf-8"))} for t, v in top.items()
                        ],
                    }
                    for tok, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs)
                ]
            }
        choices.append(
            {
                "index": i,
                "message": {"role": "assistant", "content": sample.text},
                "finish_reason": sample.finish_reason,
                "logprobs": logprobs,
            }
        )
    body = {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage([result]),
    }
    return wire.with_lineage(body, lineage)
