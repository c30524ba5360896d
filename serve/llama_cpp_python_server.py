"""llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`) in a child process.

The server the lm-buddy article judged with: `judgefleet bench` measures it as the baseline, and
the tests compare the route against it. Started on a free loopback port, stopped on exit.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from typing import Iterator, Tuple

import httpx


@contextlib.contextmanager
def llama_cpp_python_server(model: str, n_ctx: int, alias: str, *options: str,
                            timeout_s: float = 300) -> Iterator[Tuple[str, subprocess.Popen]]:
    """The server on `model` (a .gguf path, or the bundled judge), until the block ends: its base
    URL and process. `options` are the server's own flags (e.g. "--n_threads", "2")."""
    from serve.model_files import resolve_model_file

    path = resolve_model_file(model).path
    port = _free_port()
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", str(n_ctx), "--model_alias", alias, *options]
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/v1"
        _wait(url + "/models", server, timeout_s)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode}; is llama-cpp-python[server] installed?")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"llama_cpp.server did not answer at {url}")
