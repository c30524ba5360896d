"""Build llama.cpp's own C++ `llama-server` for `judgefleet bench`, once, into the cache.

    python -m benchmarks.build_llama_server            # from PyPI's llama-cpp-python sdist
    python -m benchmarks.build_llama_server --sdist llama_cpp_python-0.3.36.tar.gz --jobs 2

It uses the llama.cpp that the installed llama-cpp-python vendors (see
jobs/bench/llama_server.py). It compiles about 200 files: 21 minutes on 2 cores shared
with other work (load average 7-10, under `nice -n 10`); less on an idle machine. Needs cmake and
a C++ compiler; reaches only PyPI (for the sdist).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jobs.bench.llama_server import build, llama_cpp_python_version


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", default=None, help="llama-cpp-python version (default: the installed one, "
                   f"{llama_cpp_python_version()})")
    p.add_argument("--sdist", type=Path, default=None, help="a downloaded llama_cpp_python-<version>.tar.gz")
    p.add_argument("--jobs", type=int, default=None, help="parallel compile jobs (default: every core)")
    args = p.parse_args(argv)
    path, seconds = build(args.version, args.jobs, args.sdist)
    print(f"built {path} in {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
