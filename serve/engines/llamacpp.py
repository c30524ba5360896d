"""llama.cpp engine on llama-cpp-python: the only module that imports `llama_cpp`.

Loads a GGUF file and hands requests to a `BatchScheduler` thread that decodes many sequences
together. Blocking work (loading, decoding) stays off the replica's event loop. It implements
`serve.engines.base.Engine`, hosted by a `serve.model_server.ModelServer` replica.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
from dataclasses import replace
from typing import List, Mapping

import psutil

from serve.config import AUTO_PARALLEL_MIN, ModelConfig
from serve.engines.base import EngineInfo, GenerationRequest, GenerationResult, PromptTooLong
from serve.model_files import resolve_model_file

log = logging.getLogger(__name__)


_native_log_callback = None


def _route_native_logs(llama_cpp) -> None:
    """Send llama.cpp's own log lines to Python logging instead of stderr.

    It logs hundreds of lines per context, which would bury the job's output: its errors become
    warnings, its warnings INFO (seen with -v), the rest DEBUG.
    """
    global _native_log_callback
    if _native_log_callback is not None:
        return
    native = logging.getLogger(__name__ + ".native")

    @llama_cpp.llama_log_callback
    def callback(level, text, _user_data):
        # ggml levels: 1 debug, 2 info, 3 warn, 4 error, 5 continuation.
        py_level = {4: logging.WARNING, 3: logging.INFO}.get(level, logging.DEBUG)
        native.log(py_level, "%s", text.decode("utf-8", "replace").rstrip())

    _native_log_callback = callback  # llama.cpp keeps the pointer: keep the object alive
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))


def _import_llama_cpp():
    try:
        import llama_cpp
        from llama_cpp import _internals
    except ImportError as e:
        raise ImportError(
            "the llama.cpp engine needs llama-cpp-python: pip install 'judgefleet[cpu]'"
        ) from e
    return llama_cpp, _internals


# `parallel: 0`: sequences decoded together, per core of the node. On CPU a decode step costs about
# the same for 8 sequences as for 4 (the weights are read once a step), so throughput grows with
# the batch until the cores are busy: on 2 cores, 16 vicuna-length sequences decode at ~145-160
# tokens/s, 8 at ~115, 24 at ~155 (benchmarks/reports/engine_decode.md: python -m benchmarks.engine_decode).
AUTO_SEQUENCES_PER_CORE = 8
AUTO_PARALLEL_MAX = 64
AUTO_KV_MEMORY_SHARE = 0.25  # of the node's available memory, at most, for the KV cache


def node_cores() -> int:
    """Cores this process may run on (a container's cpuset, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def kv_bytes_per_token(metadata: Mapping[str, str]) -> int:
    """Bytes of f16 K and V one token keeps, all layers, from the GGUF's metadata."""
    arch = metadata.get("general.architecture", "")
    get = lambda key, default: int(metadata.get(f"{arch}.{key}", default))  # noqa: E731
    heads_kv = get("attention.head_count_kv", get("attention.head_count", 1))
    embd = get("embedding_length", 0)
    k = get("attention.key_length", embd // max(1, get("attention.head_count", 1)))
    v = get("attention.value_length", k)
    return get("block_count", 1) * heads_kv * (k + v) * 2


def auto_parallel(cores: int, available_bytes: int, kv_bytes_per_slot: int, cache_slots: int) -> int:
    """`parallel` for a node: AUTO_SEQUENCES_PER_CORE a core, within bounds, and fewer where
    the KV of parallel + cache_slots sequences would take more than its share of memory."""
    parallel = min(AUTO_PARALLEL_MAX, max(AUTO_PARALLEL_MIN, AUTO_SEQUENCES_PER_CORE * cores))
    fits = int(available_bytes * AUTO_KV_MEMORY_SHARE) // max(1, kv_bytes_per_slot) - cache_slots
    return max(1, min(parallel, fits))


def context_params(internals, context_length: int, parallel: int, cache_slots: int, batch_tokens: int,
                   threads: int, unified: bool = False):
    """The llama context the engine runs (benchmarks/engine_decode.py measures it, `unified` too)."""
    params = internals.LlamaContext.default_params()
    slots = parallel + cache_slots
    params.n_ctx = context_length * slots
    # One llama_batch: a chunk of prompt plus a token per decoding sequence, short answers'
    # sequences included (up to 2 x parallel, see BatchScheduler).
    params.n_batch = params.n_ubatch = batch_tokens + 2 * parallel
    params.n_seq_max = slots
    params.n_threads = params.n_threads_batch = threads
    # A KV stream per slot: attention spans one sequence's cells, not every slot's (see
    # BatchScheduler); a shared prefix is copied between streams.
    params.kv_unified = unified
    # Sliding-window layers must keep every position, or a cached prefix could not be
    # reused or shared (Gemma 3 uses a 512-token window in 5 of 6 layers).
    params.swa_full = True
    params.no_perf = True
    return params


class LlamaCppEngine:
    backend = "llama.cpp"

    def __init__(self, config: ModelConfig):
        self.config = config
        self.info: EngineInfo | None = None
        self._model = None
        self._ctx = None
        self._scheduler = None

    async def start(self) -> EngineInfo:
        return await asyncio.to_thread(self._load)

    def _load(self) -> EngineInfo:
        from serve.engines.llamacpp_scheduler import BatchScheduler

        llama_cpp, internals = _import_llama_cpp()
        _route_native_logs(llama_cpp)
        model_file = resolve_model_file(self.config.model)
        cores = node_cores()
        threads = self.config.threads or cores
        mparams = internals.LlamaModel.default_params()
        mparams.n_gpu_layers = 0
        self._model = internals.LlamaModel(path_model=str(model_file.path), params=mparams, verbose=False)
        if not self.config.parallel:  # 0: chosen here, on the node that runs it
            kv_bytes = kv_bytes_per_token(self._model.metadata())
            self.config = replace(self.config, parallel=auto_parallel(
                cores, psutil.virtual_memory().available, kv_bytes * self.config.context_length, self.config.cache_slots))
            log.info("llama.cpp: parallel chosen for %d cores: %d", cores, self.config.parallel)
        cfg = self.config
        cparams = context_params(internals, cfg.context_length, cfg.parallel, cfg.cache_slots, cfg.batch_tokens, threads)
        self._ctx = internals.LlamaContext(model=self._model, params=cparams, verbose=False)
        self._scheduler = BatchScheduler(
            self._model,
            self._ctx,
            parallel=cfg.parallel,
            context_length=cfg.context_length,
            batch_tokens=cfg.batch_tokens,
            max_candidates=cfg.max_candidates,
            cache_slots=cfg.cache_slots,
        )
        self._scheduler.start()
        template = self._model.metadata().get("tokenizer.chat_template")
        self.info = EngineInfo(
            backend=self.backend,
            model_file=model_file.path.name,
            model_sha256=model_file.sha256,
            context_length=cfg.context_length,
            chat_template=template,
        )
        log.info("llama.cpp: %s loaded, %d slots x %d tokens", model_file.path.name, cfg.parallel, cfg.context_length)
        return self.info

    def tokenize(self, text: str, add_special: bool = True) -> List[int]:
        add_bos = add_special and self._model.add_bos_token()
        return self._model.tokenize(text.encode("utf-8"), add_bos=add_bos, special=True)

    def detokenize(self, tokens: List[int]) -> str:
        return self._model.detokenize(tokens, special=True).decode("utf-8", "replace")

    def bos_text(self) -> str:
        """The BOS token as text, for chat templates that write it themselves."""
        return self._model.token_get_text(self._model.token_bos())

    def eos_text(self) -> str:
        return self._model.token_get_text(self._model.token_eos())

    def _check(self, request: GenerationRequest) -> None:
        n_prompt = len(request.prompt_tokens)
        if n_prompt == 0:
            raise ValueError("the prompt is empty")
        if n_prompt >= self.config.context_length:
            raise PromptTooLong(
                f"the prompt is {n_prompt} tokens; this model's context is "
                f"{self.config.context_length} tokens per sequence, with room needed for the answer"
            )
        if request.n > self.config.parallel:
            raise ValueError(
                f"n={request.n} is more than this replica's {self.config.parallel} parallel "
                f"sequences; ask for fewer samples per request or raise `parallel`"
            )
        # An id past the vocabulary would read outside llama.cpp's tables (it asserts or crashes).
        vocab = self._model.n_vocab()
        for what, ids in (("prompt", request.prompt_tokens), ("logit_bias", request.params.logit_bias)):
            bad = next((t for t in ids if not 0 <= t < vocab), None)
            if bad is not None:
                raise ValueError(f"{what}: token id {bad} is not in this model's vocabulary (0-{vocab - 1})")

    async def generate(self, request: GenerationRequest) -> GenerationResult:
        from serve.engines.llamacpp_scheduler import Job

        self._check(request)  # before submitting: a refused request costs the decode loop nothing
        loop = asyncio.get_running_loop()
        future: asyncio.Future = loop.create_future()

        def on_done(outcome) -> None:
            loop.call_soon_threadsafe(_settle, future, outcome)

        job = Job(request=request, on_done=on_done)
        self._scheduler.submit(job)
        try:
            return await future
        except asyncio.CancelledError:
            self._scheduler.cancel(job)  # frees its sequences at the next decode step
            raise

    def stats(self) -> dict:
        return self._scheduler.stats() if self._scheduler else {}

    def healthy(self) -> bool:
        return self._scheduler is not None

    async def shutdown(self) -> None:
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
            self._scheduler = None


def _settle(future: asyncio.Future, outcome) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
