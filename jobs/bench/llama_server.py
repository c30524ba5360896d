"""llama.cpp's own C++ server (`llama-server`) for `judgefleet bench`: where its binary lives and how
it is built (serve.endpoint.llama_server starts it).

The binary is built from the very llama.cpp that the installed llama-cpp-python vendors (its sdist's
vendor/llama.cpp, fetched from PyPI), with the same CMake defaults as that wheel (native CPU
flags), so the bench compares servers, not compilers or llama.cpp versions. It is built once into
~/.cache/judgefleet/llama-server/<llama-cpp-python version>/ (or under JUDGEFLEET_CACHE) by

    python -m benchmarks.build_llama_server

(10-20 minutes of every core on a 2-core machine; CI never builds it). Without it the bench
says so, in one line, and goes on.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple

log = logging.getLogger(__name__)

BUILD_COMMAND = "python -m benchmarks.build_llama_server"

# The CMake options: the server and nothing else, no network at build time (the web UI's prebuilt
# assets come from a Hugging Face bucket; the server answers the API without them), one static
# binary. Everything else stays at llama.cpp's defaults, as in llama-cpp-python's own build.
CMAKE_OPTIONS = (
    "-DCMAKE_BUILD_TYPE=Release",
    "-DLLAMA_BUILD_SERVER=ON",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
)


def llama_cpp_python_version() -> Optional[str]:
    """The installed llama-cpp-python's version (whose vendored llama.cpp the binary is built from)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llama-cpp-python")
    except PackageNotFoundError:
        return None


def cache_dir(version: Optional[str] = None) -> Path:
    """Where the build for `version` lives: under judgefleet's cache, as the bundled judge
    (JUDGEFLEET_CACHE, else ~/.cache/judgefleet)."""
    version = version or llama_cpp_python_version() or "unknown"
    root = Path(os.environ.get("JUDGEFLEET_CACHE") or Path.home() / ".cache" / "judgefleet")
    return root / "llama-server" / version


def find_binary(configured: Optional[str] = None) -> Optional[Path]:
    """The llama-server to run: `configured` (bench.llama_server) if given, else the cached build for
    the installed llama-cpp-python; None when there is none."""
    path = Path(configured).expanduser() if configured else cache_dir() / "llama-server"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def missing_message(configured: Optional[str] = None) -> str:
    """The one line the bench prints when it has no llama-server to run."""
    if configured:
        return f"bench: llama-server: bench.llama_server={configured} is not an executable file; skipping that method"
    return (f"bench: llama-server is not built for llama-cpp-python {llama_cpp_python_version()} "
            f"(looked for {cache_dir() / 'llama-server'}); build it once with `{BUILD_COMMAND}` "
            "(10-20 minutes on 2 cores); skipping that method")


# -- build ----------------------------------------------------------------------------------
def build(version: Optional[str] = None, jobs: Optional[int] = None, sdist: Optional[Path] = None,
          python: str = sys.executable) -> Tuple[Path, float]:
    """Fetch llama-cpp-python's sdist from PyPI (or use `sdist`), build `llama-server` from its
    vendor/llama.cpp, copy it into the cache. Returns (binary path, build seconds)."""
    version = version or llama_cpp_python_version()
    if not version:
        raise RuntimeError("llama-cpp-python is not installed; pip install llama-cpp-python first")
    for tool in ("cmake", "c++"):
        if not shutil.which(tool):
            raise RuntimeError(f"building llama-server needs `{tool}` on PATH (e.g. apt-get install cmake g++)")
    target = cache_dir(version) / "llama-server"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="judgefleet-llama-server-") as tmp:
        tmp = Path(tmp)
        if sdist is None:
            subprocess.run([python, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps",
                            f"llama-cpp-python=={version}", "-d", str(tmp)], check=True)
            sdist = next(tmp.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp / "src", filter="data")
        source = next((tmp / "src").glob("*/vendor/llama.cpp"))
        build_dir = tmp / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build_dir), *CMAKE_OPTIONS,
                        *(["-G", "Ninja"] if shutil.which("ninja") else [])], check=True)
        subprocess.run(["cmake", "--build", str(build_dir), "--target", "llama-server",
                        "-j", str(jobs or os.cpu_count() or 1)], check=True)
        built = next(build_dir.glob("**/bin/llama-server"))
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(built, target.with_suffix(".tmp"))
        os.replace(target.with_suffix(".tmp"), target)
    (target.parent / "BUILD.txt").write_text(
        f"llama-server from llama-cpp-python {version} (vendor/llama.cpp), cmake {' '.join(CMAKE_OPTIONS)}\n")
    return target, time.perf_counter() - started
