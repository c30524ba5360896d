"""Engines' own OpenAI servers in child processes, each on a free loopback port, stopped on exit.

- llama-cpp-python's server (`python -m llama_cpp.server`): the server the lm-buddy article's
  method is measured on; `judgefleet bench` runs it as the baseline, and the tests compare the
  route against it.
- llama.cpp's C++ `llama-server` and vLLM's OpenAI server: the peers `judgefleet bench` measures
  (what a CPU user would run instead of judgefleet).

jobs/ reaches them through serve.endpoint.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import os
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import httpx


@contextlib.contextmanager
def llama_cpp_python_server(model: str, n_ctx: int, alias: str, *options: str,
                            timeout_s: float = 300) -> Iterator[Tuple[str, subprocess.Popen]]:
    """The server on `model` (a .gguf path, or the bundled judge), until the block ends: its base
    URL and process. `options` are the server's own flags (e.g. "--n_threads", "2")."""
    from serve.model_files import resolve_model_file

    path = resolve_model_file(model).path
    port = free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias, *options]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url + "/models", server, timeout_s, "llama_cpp.server",
                   "is llama-cpp-python[server] installed?")
        yield url, server
    finally:
        stop(server)


@contextlib.contextmanager
def llama_server(binary: str, model: str, n_ctx_per_slot: int, parallel: int, alias: str, threads: int = 0,
                 extra: Sequence[str] = (), log_path: Optional[Path] = None,
                 timeout_s: float = 300) -> Iterator[Tuple[str, subprocess.Popen]]:
    """llama.cpp's `llama-server` (the executable `binary`) on `model` (a .gguf path, or the bundled
    judge) with `parallel` slots and continuous batching, until the block ends: its base URL and
    process. Each slot gets `n_ctx_per_slot` of context (llama-server splits -c among its slots).
    Its log (the timings of every prompt and decode) goes to `log_path`."""
    from serve.model_files import resolve_model_file

    path = resolve_model_file(model).path
    port = free_port()
    cmd = [str(binary), "--model", str(path), "--host", "127.0.0.1", "--port", str(port), "--alias", alias,
           "--ctx-size", str(n_ctx_per_slot * parallel), "--parallel", str(parallel), "--cont-batching",
           "--no-webui", *(["--threads", str(threads)] if threads else []), *extra]
    with _started(cmd, "llama-server", log_path, timeout_s) as started:
        yield started


@contextlib.contextmanager
def vllm_server(model: str, alias: str, max_model_len: int, max_num_seqs: int, seed: Optional[int] = None,
                hf_model: Optional[str] = None, log_path: Optional[Path] = None,
                timeout_s: float = 900) -> Iterator[Tuple[str, subprocess.Popen]]:
    """vLLM's own OpenAI server (`python -m vllm.entrypoints.openai.api_server`) until the block ends:
    its base URL and process. It serves the Hugging Face copy of the bundled judge that vLLM members
    use (made once), or `hf_model` for any other `model`. On CPU, as for judgefleet's vLLM members
    (serve/engines/vllm.py), whole prompts are prefilled: the CPU build kills its engine when a
    seeded request's prefill is chunked."""
    from serve.config import BUNDLED_MODEL

    if model == BUNDLED_MODEL:
        from serve.model_files import bundled_hf_model

        source = str(bundled_hf_model().path)
    elif hf_model:
        source = hf_model
    else:
        raise ValueError(f"vLLM serves Hugging Face models; give the one for '{model}'")
    port = free_port()
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", source,
           "--served-model-name", alias, "--host", "127.0.0.1", "--port", str(port),
           "--max-model-len", str(max_model_len), "--max-num-seqs", str(max_num_seqs), "--dtype", "bfloat16",
           "--no-enable-chunked-prefill", "--max-num-batched-tokens", str(max(max_model_len, 2048)),
           *(["--seed", str(seed)] if seed is not None else [])]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    with _started(cmd, "vLLM's OpenAI server", log_path, timeout_s, env) as started:
        yield started


@contextlib.contextmanager
def _started(cmd, name: str, log_path: Optional[Path], timeout_s: float, env=None):
    port = cmd[cmd.index("--port") + 1]
    out = open(log_path, "wb") if log_path else subprocess.DEVNULL
    server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        wait_ready(url + "/models", server, timeout_s, name, f"its log: {log_path}" if log_path else None)
        yield url, server
    finally:
        stop(server)
        if log_path:
            out.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen, timeout_s: float, name: str, hint: Optional[str] = None) -> None:
    """Until GET `url` answers 200; RuntimeError if `proc` exits first, TimeoutError after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}" + (f"; {hint}" if hint else ""))
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{name} did not answer at {url} within {timeout_s:.0f} s")


def stop(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; then the same for any child it left behind (vLLM's
    server runs its engine in a child process)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for child in children:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
