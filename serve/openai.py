"""The OpenAI wire format: request validation and response bodies, shared by every engine.

Every field a request may carry has a bounded cost, checked here before any engine sees it: the
body's bytes, the count of every list and map, the range of every number, the length of every
string (and text must be able to fit the model's context: `check_fits`). Types are strict (no
"16" for 16, no NaN) so every engine reads a body the same way. A field the route does not handle
is refused with a 400 that names it, for every engine: passed on, one engine would honour it and
another ignore it (or choke on it, like `stream`). Extensions beyond OpenAI follow vLLM: `top_k`,
and `structured_outputs: {"choice": [...]}` (or the older `guided_choice`) to constrain the answer
to one of a few strings. Answers carry the replica's lineage (`serve.wire`).
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Dict, List, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, field_validator

from serve import wire
from serve.engines.base import GenerationResult, SamplingParams
from serve.errors import OpenAIError

# -- bounds: what one request may ask for -------------------------------------------------------
MAX_BODY_BYTES = 4 << 20  # a request body, whichever front receives it (413 past it)
MAX_LOGPROBS = 20
MAX_N = 16
MAX_PROMPTS = 64  # prompts in one completions request
MAX_SEQUENCES = 64  # n x prompts: the samples one request may start
MAX_STOPS = 16
MAX_STOP_CHARS = 256
MAX_LOGIT_BIAS = 300  # OpenAI's own bound
MAX_CHOICES = 64
MAX_CHOICE_CHARS = 256
MAX_MESSAGES = 256
MAX_NAME_CHARS = 256  # model ids, user, message names
MAX_TOKENS = 1 << 20  # any token count (the model's context bounds it further: check_fits)
MAX_TOKEN_ID = (1 << 31) - 1
MAX_TOP_K = 1 << 20
SEED_RANGE = (-(1 << 63), (1 << 64) - 1)  # int64 or uint64, as engines take seeds
# Text of more than this many characters per context token cannot fit the context (tokens of
# real vocabularies average 3-5 characters; 32 leaves room for long runs of spaces or symbols), so
# it is refused before it is tokenized: tokenizing costs CPU on the replica's event loop.
MAX_CHARS_PER_TOKEN = 32

Name = Annotated[str, StringConstraints(min_length=1, max_length=MAX_NAME_CHARS)]
Stop = Annotated[str, StringConstraints(min_length=1, max_length=MAX_STOP_CHARS)]
Choice = Annotated[str, StringConstraints(min_length=1, max_length=MAX_CHOICE_CHARS)]
TokenId = Annotated[int, Field(ge=0, le=MAX_TOKEN_ID)]
TokenIds = Annotated[List[TokenId], Field(min_length=1, max_length=MAX_TOKENS)]
Count = Annotated[int, Field(ge=1, le=MAX_TOKENS)]
# Strict: a JSON type that is not the field's is refused, not coerced ("16", true, 16.0 for an
# int); floats refuse NaN and infinities. Unknown fields are refused (see the module's docstring).
_STRICT = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class StructuredOutputs(BaseModel):
    model_config = _STRICT
    choice: Optional[List[Choice]] = Field(default=None, min_length=1, max_length=MAX_CHOICES)


class _SamplingFields(BaseModel):
    model_config = _STRICT

    model: Name
    max_tokens: Optional[Count] = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=MAX_TOP_K)
    n: int = Field(default=1, ge=1, le=MAX_N)
    stop: List[Stop] = Field(default_factory=list, max_length=MAX_STOPS)
    seed: Optional[int] = Field(default=None, ge=SEED_RANGE[0], le=SEED_RANGE[1])
    stream: bool = False
    stream_options: None = None  # only meaningful with stream, which is refused
    logit_bias: Optional[Dict[Annotated[str, StringConstraints(max_length=12)], float]] = Field(
        default=None, max_length=MAX_LOGIT_BIAS)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    structured_outputs: Optional[StructuredOutputs] = None
    guided_choice: Optional[List[Choice]] = Field(default=None, min_length=1, max_length=MAX_CHOICES)
    user: Optional[Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]] = None  # accepted, unused

    @field_validator("stop", mode="before")
    @classmethod
    def _stops(cls, v):
        # OpenAI takes one string or a list; None means none.
        return [] if v is None else [v] if isinstance(v, str) else v

    @field_validator("logit_bias")
    @classmethod
    def _bias_keys(cls, v):
        for key in v or {}:
            if not key.isdigit() or int(key) > MAX_TOKEN_ID:
                raise ValueError(f"keys are token ids (0-{MAX_TOKEN_ID}); got {key!r}")
        return v

    def unsupported(self) -> None:
        if self.stream:
            raise OpenAIError(400, "stream=true is not supported by this route; send stream=false", "stream")
        if self.presence_penalty or self.frequency_penalty:
            raise OpenAIError(400, "presence_penalty and frequency_penalty are not supported; leave them 0", "presence_penalty")

    def sampling(self, max_tokens: int, logprobs: Optional[int]) -> SamplingParams:
        choices = (self.structured_outputs.choice if self.structured_outputs else None) or self.guided_choice
        # Clamped as OpenAI does: past +-100 a bias only bans or forces the token.
        bias = {int(key): max(-100.0, min(100.0, value)) for key, value in (self.logit_bias or {}).items()}
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            seed=self.seed,
            stop=list(self.stop),
            logprobs=logprobs,
            choices=choices,
            logit_bias=bias,
        )

    def _check_max_tokens(self, max_tokens: Optional[int], context_length: int, field: str) -> None:
        if max_tokens is not None and context_length and max_tokens >= context_length:
            raise OpenAIError(400, f"{field}={max_tokens} does not fit this model's context of {context_length} "
                              "tokens (the prompt needs at least one)", field)


def _too_long(what: str, size: str, context_length: int) -> OpenAIError:
    return OpenAIError(400, f"{what} is {size}; it cannot fit this model's context of {context_length} tokens",
                       "prompt" if what.startswith("prompt") else "messages", wire.CONTEXT_LENGTH_EXCEEDED)


class CompletionRequest(_SamplingFields):
    # Text, or token ids (as OpenAI and vLLM take them): one prompt, or a list of them.
    prompt: List[Union[str, TokenIds]] = Field(min_length=1, max_length=MAX_PROMPTS)
    max_tokens: Optional[Count] = 16
    logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)
    echo: bool = False
    best_of: Optional[int] = Field(default=None, ge=1, le=MAX_N)
    suffix: Optional[Annotated[str, StringConstraints(max_length=MAX_NAME_CHARS)]] = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _prompts(cls, v):
        if isinstance(v, str):
            return [v]
        if isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v):
            return [v]  # one prompt as token ids
        if not isinstance(v, list) or not v:
            raise ValueError(f"a string, a list of 1-{MAX_PROMPTS} strings, a list of token ids, or a list of "
                             "lists of token ids")
        return v

    def unsupported(self) -> None:
        super().unsupported()
        if self.echo:
            raise OpenAIError(400, "echo=true is not supported by this route", "echo")
        if self.best_of not in (None, 1):
            raise OpenAIError(400, "best_of is not supported; use n", "best_of")
        if self.suffix:
            raise OpenAIError(400, "suffix is not supported by this route", "suffix")

    def check_fits(self, context_length: int) -> None:
        """Refuse what cannot fit the context before a token is computed (0: context unknown)."""
        if self.n * len(self.prompt) > MAX_SEQUENCES:
            raise OpenAIError(400, f"n x prompts is {self.n} x {len(self.prompt)}; one request may ask for at most "
                              f"{MAX_SEQUENCES} samples", "n")
        if not context_length:
            return
        self._check_max_tokens(self.max_tokens, context_length, "max_tokens")
        for i, p in enumerate(self.prompt):
            if isinstance(p, str) and len(p) > context_length * MAX_CHARS_PER_TOKEN:
                raise _too_long(f"prompt {i}", f"{len(p)} characters", context_length)
            if isinstance(p, list) and len(p) >= context_length:
                raise _too_long(f"prompt {i}", f"{len(p)} tokens", context_length)


class ChatMessage(BaseModel):
    model_config = _STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: Optional[Name] = None  # accepted, unused


class ChatRequest(_SamplingFields):
    messages: List[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: Optional[Count] = None
    logprobs: bool = False
    top_logprobs: Optional[int] = Field(default=None, ge=0, le=MAX_LOGPROBS)

    def check_fits(self, context_length: int) -> None:
        if not context_length:
            return
        self._check_max_tokens(self.max_tokens, context_length, "max_tokens")
        self._check_max_tokens(self.max_completion_tokens, context_length, "max_completion_tokens")
        chars = sum(len(m.content) for m in self.messages)
        if chars > context_length * MAX_CHARS_PER_TOKEN:
            raise _too_long("messages", f"{chars} characters", context_length)


class TokenizeRequest(BaseModel):
    model_config = _STRICT
    model: Name
    prompt: str
    add_special_tokens: bool = True

    def check_fits(self, context_length: int) -> None:
        if context_length and len(self.prompt) > context_length * MAX_CHARS_PER_TOKEN:
            raise _too_long("prompt", f"{len(self.prompt)} characters", context_length)


# Pydantic's names for union members and wrappers in an error's location: not the client's fields.
_LOC_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}


def parse(model_cls, body) -> BaseModel:
    """Validate a JSON body; a failure is a 400 naming the first bad field."""
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    try:
        request = model_cls.model_validate(body)
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        loc = list(err["loc"])
        if "[key]" in loc:  # a bad map key: name the map, not the (client's, maybe huge) key
            loc = loc[:loc.index("[key]") - 1]
        loc = [p for p in loc if isinstance(p, int) or ("[" not in str(p) and str(p) not in _LOC_TAGS)]
        field = ".".join(str(p) for p in loc)[:100] or None  # a hostile key is not echoed whole
        if err["type"] == "extra_forbidden":
            message = f"'{field}' is not supported by this route; remove it"
        else:
            message = err["msg"].removeprefix("Value error, ")
            message = f"{field}: {message}" if field else message
        raise OpenAIError(400, message, field) from None
    try:  # JSON may escape half a surrogate pair ("\ud800"): a str no tokenizer can encode
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise OpenAIError(400, "the body holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff); "
                          "text must be valid Unicode") from None
    return request


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
