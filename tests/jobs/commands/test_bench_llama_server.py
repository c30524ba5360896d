"""llama.cpp's own llama-server, as `judgefleet bench` runs it - only where it is built
(python -m benchmarks.build_llama_server); CI does not build it."""

import asyncio

import pytest

from jobs.bench.client import recount_completion_tokens, requests_for, run_requests
from jobs.bench.llama_server import find_binary
from jobs.config import load_config
from jobs.judge.row_judge import JudgeSettings
from serve.endpoint import llama_server
from tests.conftest import REPO

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(find_binary() is None, reason="llama-server is not built (python -m benchmarks.build_llama_server)")]


def test_llama_server_answers_n_samples_with_their_own_seeds_and_the_bench_counts_every_choices_tokens(bundled_model):
    cfg = load_config(REPO / "conf" / "bench.yaml", ["sampling.max_tokens=12", "sampling.num_samples=3"])
    settings = JudgeSettings.from_config(cfg, None, route=False)
    rows = [("r0", "Say something."), ("r1", "Say something else.")]
    one_row = rows[:1]
    with llama_server(str(find_binary()), cfg.serve.models[0].model, 1024, 4, cfg.judge.model) as (url, server):
        with_n = asyncio.run(run_requests(url, requests_for(rows, settings, use_n=True), 4, "absolute", keep_choices=True))
        reported = with_n.completion_tokens
        asyncio.run(recount_completion_tokens(url, with_n, 12))
        concurrent = asyncio.run(run_requests(url, requests_for(rows, settings, use_n=False), 4, "absolute"))
        # One at a time, so that batching (whose sums round differently) does not change the samples.
        alone_n = asyncio.run(run_requests(url, requests_for(one_row, settings, use_n=True), 1, "absolute", keep_choices=True))
        alone = asyncio.run(run_requests(url, requests_for(one_row, settings, use_n=False), 1, "absolute", keep_choices=True))
    assert with_n.requests == 2 and with_n.answered == 6 and not with_n.errors
    assert reported < with_n.completion_tokens <= 6 * 12  # its usage counted one choice of three
    assert concurrent.requests == 6 and concurrent.answered == 6 and concurrent.max_in_flight == 4
    # Child i of a request with seed s samples with seed s + i, as the article's i-th request: same texts.
    assert [t for t, _ in alone_n.choices] == [t for t, _ in alone.choices] and len(alone.choices) == 3
    assert server.poll() is not None  # stopped
