"""The engine protocol: what a model replica needs from an inference engine.

Engines take token ids and sampling settings and give back samples; the OpenAI shapes live in
`serve.openai`, so every engine answers the route the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional, Protocol

if TYPE_CHECKING:
    from serve.config import ModelConfig


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: Optional[int] = None
    stop: List[str] = field(default_factory=list)
    # Top log-probabilities to return per generated token (None = none).
    logprobs: Optional[int] = None
    # Constrain the answer to one of these strings (vLLM's `structured_outputs.choice`).
    choices: Optional[List[str]] = None
    # OpenAI logit_bias: token id -> bias added to its logit.
    logit_bias: Dict[int, float] = field(default_factory=dict)


@dataclass
class GenerationRequest:
    prompt_tokens: List[int]
    params: SamplingParams
    n: int = 1
    # The prompt as text, when it came as text: lets an engine continue a cached sequence whose
    # text the prompt extends, even where tokenizing the whole text again would split differently.
    prompt_text: Optional[str] = None


@dataclass
class TokenLogprobs:
    """Per generated token: its text, its log-probability, and the top alternatives."""

    tokens: List[str] = field(default_factory=list)
    token_logprobs: List[float] = field(default_factory=list)
    top_logprobs: List[Dict[str, float]] = field(default_factory=list)


@dataclass
class Sample:
    text: str
    finish_reason: str  # "stop" | "length"
    completion_tokens: int
    logprobs: Optional[TokenLogprobs] = None


@dataclass
class GenerationResult:
    samples: List[Sample]
    prompt_tokens: int
    # Prompt tokens whose KV came from cache instead of being computed again.
    cached_tokens: int = 0


@dataclass
class EngineInfo:
    backend: str
    model_file: str
    model_sha256: str
    context_length: int
    chat_template: Optional[str] = None


class PromptTooLong(ValueError):
    """The prompt does not fit the context; raised before any compute is spent on it."""


class Engine(Protocol):
    """Everything a `serve.model_server.ModelServer` replica calls on its engine.

    Constructed from the member's `ModelConfig` (no work there), then started once; its owner
    shuts it down. `tokenize`, `bos_text`, `eos_text` and `stats` are called only once started.
    """

    info: Optional[EngineInfo]

    def __init__(self, config: "ModelConfig") -> None: ...

    async def start(self) -> EngineInfo:
        """Load the model; blocking work stays off the event loop."""

    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        """Token ids of `text`; `add_special` adds BOS where the model wants one."""

    def bos_text(self) -> str:
        """The BOS token as text, for chat templates that write it themselves."""

    def eos_text(self) -> str:
        """The EOS token as text, for chat templates."""

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        """Samples for one prompt; `PromptTooLong` or ValueError for a request it cannot take.
        Cancelling it frees the request's sequences."""

    def stats(self) -> Dict[str, int]:
        """Counters for GET /pools (sequences running, cached tokens, ...); {} when it has none."""

    def healthy(self) -> bool:
        """False once the engine has stopped: Serve's health check then replaces the replica."""

    async def shutdown(self) -> None:
        """Stop and free the model; safe to call twice."""
