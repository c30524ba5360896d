"""Shared fixtures: one Ray per session, one judge route per session, real servers on loopback.

Everything started here is stopped here: Ray, the Serve app, llama-cpp-python's server, stubs.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.stub_openai import StubBehaviour, StubOpenAIServer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
VICUNA = SHARED / "data" / "prometheus" / "vicuna_eval.json"
HHH = SHARED / "data" / "prometheus" / "hhh_alignment_eval.json"
QUICKSTART = REPO / "conf" / "quickstart.yaml"
QUICKSTART_DATA = REPO / "conf" / "data" / "quickstart.jsonl"


def ctrl_c_reaches_it() -> None:
    """A `preexec_fn` for a child the test will Ctrl-C (SIGINT): a shell starts background jobs
    with SIGINT ignored, and a child inherits that - so a suite run with `&` (or nohup) would see
    a process that Ctrl-C cannot stop. In a terminal's foreground it is already so."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """Tests share the user's model cache when it exists (assembling costs a second), else a temp one."""
    return Path(os.environ.get("JUDGEFLEET_CACHE") or Path.home() / ".cache" / "judgefleet")


@pytest.fixture(scope="session")
def bundled_model(cache_dir):
    from serve.config import BUNDLED_MODEL
    from serve.model_files import resolve_model_file

    return resolve_model_file(BUNDLED_MODEL)


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the whole session: a local multi-node cluster with a head, a node that offers
    `judge_gpu` (standing in for a GPU node) and one that offers `judge_cpu`."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 6})
    gpu_node = cluster.add_node(num_cpus=4, resources={"judge_gpu": 1})
    cpu_node = cluster.add_node(num_cpus=4, resources={"judge_cpu": 1})
    ray.init(address=cluster.address, logging_level=logging.WARNING)
    yield SimpleNamespace(ray=ray, cluster=cluster, gpu_node=gpu_node.node_id, cpu_node=cpu_node.node_id)
    try:
        from ray import serve

        serve.shutdown()
    finally:
        ray.shutdown()
        cluster.shutdown()


@pytest.fixture(scope="session")
def serve_port() -> int:
    """Serve has one HTTP port per cluster: every app of the session is under it."""
    return free_port()


@pytest.fixture(scope="session")
def judge_route(ray_session, bundled_model, serve_port):
    """The real route with the real bundled judge, deployed once: (url, JobConfig)."""
    from jobs.config import load_config
    from serve.endpoint import JudgeEndpoint

    # Serve's own HTTP proxy in front (the `serve run` / RayService path); the fleet tests use the direct front.
    cfg = load_config(QUICKSTART, [f"serve.port={serve_port}", "serve.front=proxy", "serve.models.0.context_length=2048",
                                   "serve.models.0.parallel=4"])
    with JudgeEndpoint(cfg.serve, cfg.judge.model) as endpoint:
        yield endpoint.url, cfg


@pytest.fixture(scope="session")
def llama_server(bundled_model):
    """llama-cpp-python's own OpenAI server on the bundled model (the article's setup)."""
    from serve.config import BUNDLED_MODEL
    from serve.endpoint import llama_cpp_python_server

    with llama_cpp_python_server(BUNDLED_MODEL, 2048, "gemma-local", "--n_threads", "2", timeout_s=120) as (url, _):
        yield url


@pytest.fixture
def stub():
    """A fresh stand-in judge per test; tweak `stub.behaviour` before use."""
    server = StubOpenAIServer(StubBehaviour()).start()
    yield server
    server.stop()


@pytest.fixture
def write_jsonl(tmp_path):
    import json

    def write(rows, name="data.jsonl") -> Path:
        path = tmp_path / name
        with open(path, "w") as f:
            for row in rows:
                f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
        return path

    return write
