"""Faults of a score job, each through the real pipeline: every input row ends in the output once.

The replica test kills the real llama.cpp judge replica behind the real route. The other judge
faults (garbage, empty answers, hangs, a driver killed at a chosen moment) need a judge that
misbehaves on demand and fast: the stub, a real OpenAI-shaped HTTP server.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from jobs.commands.score import run
from tests.conftest import QUICKSTART, REPO, VICUNA

pytestmark = pytest.mark.integration

RUBRIC = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}


def dataset(write_jsonl, n, name="data.jsonl"):
    return write_jsonl([{"instruction": f"question {i}", "response": f"answer {i}", "rubric": RUBRIC}
                        for i in range(n)], name=name)


def scored_rows(out):
    return [r for s in sorted((out / "scores").glob("part-*.parquet")) for r in pq.read_table(s).to_pylist()]


def manifests(out):
    return sorted((out / "scores").glob("part-*.manifest.json"))


# -- a judge replica dies under the job ---------------------------------------------------------
def judge_replicas(app="judgefleet"):
    from ray.util.state import list_actors

    return [a for a in list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
            if a.class_name.startswith(f"ServeReplica:{app}:") and a.class_name != f"ServeReplica:{app}:ingress"]


def test_a_killed_replica_is_replaced_and_every_row_is_scored_once(judge_route, write_jsonl, tmp_path):
    import ray

    url, route_cfg = judge_route
    out = tmp_path / "out"
    cfg = load_config(QUICKSTART, [f"judge.url={url}", f"judge.model={route_cfg.judge.model}", "sampling.num_samples=2",
                                   "sampling.max_tokens=32", f"output.dir={out}", "output.shard_rows=1",
                                   "output.group_by=[]", "tracking.mode=disabled"])
    (victim,) = judge_replicas()
    result = {}
    job = threading.Thread(target=lambda: result.update(summary=run(cfg)))
    job.start()
    deadline = time.monotonic() + 300
    while not manifests(out) and time.monotonic() < deadline:  # mid-run: a row is done, the others are not
        time.sleep(0.2)
    ray.kill(ray.get_actor(victim.name, namespace="serve"), no_restart=True)
    assert 0 < len(manifests(out)) < 16 and job.is_alive()  # killed with rows still to judge
    job.join(600)
    assert not job.is_alive() and "summary" in result

    rows = scored_rows(out)
    source = [json.loads(line) for line in (REPO / "conf/data/quickstart.jsonl").read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(s["id"] for s in source)  # each row once
    assert all(r["errors"] is None and None not in r["scores"] for r in rows), [r["errors"] for r in rows]
    assert result["summary"]["scored"] == 16
    (replacement,) = judge_replicas()  # Serve started a new replica, which judged the rest
    assert replacement.actor_id != victim.actor_id
    replicas = {r["judge_replica"] for r in rows}
    assert len(replicas) == 2 and any(victim.name.endswith(r) for r in replicas), replicas


# -- the job's driver is SIGKILLed, then the same command runs again ---------------------------
def score_command(stub, path, out, address, *more):
    return [sys.executable, "-m", "jobs.cli", "score", str(QUICKSTART), f"judge.url={stub.url}", "judge.model=stub-judge",
            f"dataset.path={path}", f"output.dir={out}", "output.shard_rows=10", "output.group_by=[]",
            "tracking.mode=disabled", f"ray.address={address}", "judge.max_in_flight=4", *more]


def quiet_stub(stub, settle_s=1.0):
    """Wait until the stub has had no request for `settle_s` (a killed job's actors are gone)."""
    last, since = stub.stats.requests, time.monotonic()
    while time.monotonic() - since < settle_s:
        time.sleep(0.1)
        if stub.stats.requests != last:
            last, since = stub.stats.requests, time.monotonic()


def test_a_killed_driver_rerun_recomputes_only_unfinished_shards(ray_session, stub, write_jsonl, tmp_path):
    path = dataset(write_jsonl, 120)
    address = ray_session.cluster.address
    clean = tmp_path / "clean"
    subprocess.run(score_command(stub, path, clean, address), cwd=REPO, check=True, capture_output=True, timeout=300)
    per_row = stub.stats.by_path["/v1/completions"] / 120

    out = tmp_path / "out"
    stub.behaviour.delay_s = 0.15  # slow enough to kill it in the middle
    driver = subprocess.Popen(score_command(stub, path, out, address), cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(manifests(out)) < 2 and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.1)
        assert driver.poll() is None, "the job ended before it could be killed"
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(30)
    finally:
        if driver.poll() is None:
            driver.kill()
    finished = {m.name: m.stat().st_mtime_ns for m in manifests(out)}
    done_rows = sum(json.loads(m.read_text())["rows"] for m in manifests(out))
    assert 20 <= done_rows < 120
    quiet_stub(stub)
    stub.behaviour.delay_s = 0.0
    stub.stats.by_path.clear()

    again = subprocess.run(score_command(stub, path, out, address), cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming: {done_rows} rows" in again.stderr.replace("\n", " ")
    assert "Unclosed" not in again.stderr  # the client actors closed their connections
    ids = [r["row_id"] for r in scored_rows(out)]
    assert len(ids) == len(set(ids)) == 120
    assert set(ids) == {r["row_id"] for r in scored_rows(clean)}
    assert stub.stats.by_path["/v1/completions"] == per_row * (120 - done_rows)  # only the unfinished rows
    assert {m.name: m.stat().st_mtime_ns for m in manifests(out) if m.name in finished} == finished


# -- a judge that answers garbage, nothing, or never ---------------------------------------------
@pytest.mark.parametrize("fault, error", [
    ({"garbage": True}, "invalid JSON"),
    ({"empty": True}, None),
    ({"hang_s": 120.0}, "timed out"),
])
def test_a_broken_judge_gives_row_errors_in_bounded_time(ray_session, stub, write_jsonl, tmp_path, fault, error):
    for key, value in fault.items():
        setattr(stub.behaviour, key, value)
    path, out = dataset(write_jsonl, 6), tmp_path / "out"
    cfg = load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", f"dataset.path={path}",
                                   f"output.dir={out}", "output.group_by=[]", "tracking.mode=disabled",
                                   "judge.timeout_s=1.5", "judge.max_retries=1"])
    started = time.monotonic()
    summary = run(cfg)
    assert time.monotonic() - started < 60  # a hang of 120 s per request did not hold the job
    rows = scored_rows(out)
    assert len(rows) == 6 and summary["rows"] == 6 and summary["scored"] == 0
    for row in rows:
        assert row["errors"] and row["scores"] == [None] * 3 and row["score"] is None
        if error:
            assert any(error in e for e in row["errors"]), row["errors"]


# -- bad output dirs and bad dataset files: one clear message, before any work -------------------
def test_bad_paths_fail_before_work_with_one_clear_message(tmp_path, write_jsonl):
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    truncated = tmp_path / "truncated.json"
    truncated.write_text(VICUNA.read_text()[:5000] if VICUNA.exists() else '[{"instruction": "a", "resp')
    not_json = tmp_path / "broken.json"
    not_json.write_text('[{"instruction": "a"},, {"instruction": "b"}]')
    good = dataset(write_jsonl, 2)
    cases = [
        ([f"dataset.path={good}", f"output.dir={a_file}/out"], "output.dir: cannot write to"),
        ([f"dataset.path={truncated}", "dataset.prompt_field=instruction"], "is not a complete JSON document"),
        ([f"dataset.path={not_json}", "dataset.prompt_field=instruction"], "is not valid JSON"),
        ([f"dataset.path={tmp_path / 'missing.jsonl'}"], "matches no file"),
    ]
    for overrides, words in cases:
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "jobs.cli", "score", str(QUICKSTART), "tracking.mode=disabled",
                                 f"output.dir={tmp_path / 'out'}", *overrides],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, (overrides, result.stderr[-2000:])
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("judgefleet: error: ") and words in lines[0], result.stderr
        assert time.monotonic() - started < 30  # no Ray was started


def test_a_stopped_job_writes_the_rows_it_has_judged(ray_session, stub, write_jsonl, tmp_path):
    """SIGTERM (a stopped pod, `ray job stop`, Ctrl-C): judged rows still buffered reach disk."""
    path, out = dataset(write_jsonl, 600), tmp_path / "out"
    stub.behaviour.delay_s = 0.01
    cmd = score_command(stub, path, out, ray_session.cluster.address, "output.shard_rows=1000", "output.flush_s=600")
    driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while stub.stats.by_path.get("/v1/completions", 0) < 4 * 300 and time.monotonic() < deadline:
            time.sleep(0.05)  # half the rows judged: more than a block has reached the driver
        assert not manifests(out)  # nothing on disk yet: one shard would hold 1000 rows
        driver.send_signal(signal.SIGTERM)
        _, stderr = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130 and "interrupted" in stderr
    saved = scored_rows(out)
    assert 0 < len(saved) < 600 and all(r["errors"] is None for r in saved)
    quiet_stub(stub)
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    ids = [r["row_id"] for r in scored_rows(out)]
    assert len(ids) == len(set(ids)) == 600
