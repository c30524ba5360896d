"""A score job that deploys its own route ends cleanly whatever ends it: `kill -9` of the driver
leaves no process of it running for more than a few seconds (none holding the route's port or
answering on it), so the same command run at once resumes and finishes; SIGTERM shuts down as fast.

The real quickstart command (its own local Ray, the bundled judge on the direct front) as a
subprocess, on a port of its own so that both runs ask for the same one."""

import json
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO, ctrl_c_reaches_it, free_port

pytestmark = pytest.mark.integration

ROWS = 6


def score_command(out, port):
    # One row a batch (judge.max_in_flight=2) and a shard a row: a shard is on disk soon, rows remain.
    return [sys.executable, "-m", "jobs.cli", "score", "conf/quickstart.yaml", f"dataset.limit={ROWS}",
            "sampling.num_samples=1", "sampling.max_tokens=64", "judge.max_in_flight=2", "output.shard_rows=1",
            "serve.models.0.parallel=2",  # rows still left when the first shard lands
            f"serve.port={port}", f"output.dir={out}", "ray.num_cpus=6", "tracking.mode=offline"]


def start(out, port):
    return subprocess.Popen(score_command(out, port), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=ctrl_c_reaches_it)


def wait_for(condition, timeout_s, driver):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert driver.poll() is None, f"the job ended early: {driver.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def job_processes(driver):
    """Every process of the job but the driver (Ray's, the replicas, W&B's, the watchdog)."""
    return psutil.Process(driver.pid).children(recursive=True)


def still_running(processes, within_s):
    _, alive = psutil.wait_procs(processes, timeout=within_s)
    return alive


def kill_all(*processes):
    """Whatever a failure left behind (only this test's processes: a session's Ray stays)."""
    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass


def test_kill_9_then_the_same_command_resumes_and_finishes(tmp_path):
    out, port = tmp_path / "out", free_port()
    first, processes, again = start(out, port), [], None
    try:
        wait_for(lambda: any((out / "scores").glob("part-*.manifest.json")), 900, first)
        processes = job_processes(first)
        assert any("raylet" in " ".join(p.cmdline()) for p in processes)
        first.kill()  # SIGKILL: no handler runs, nothing of the job's own shutdown
        first.wait()
        killed_at = time.monotonic()
        again = start(out, port)  # at once: the port must not be held by what the first run left
        alive = still_running(processes, 10)
        assert not alive, f"outlived the killed job by 10 s: {[(p.pid, p.name()) for p in alive]}"
        print(f"every process of the killed job was gone {time.monotonic() - killed_at:.1f} s after the kill")
        stderr = again.communicate(timeout=900)[1]
    finally:
        kill_all(first, *processes)
        if again is not None and again.poll() is None:
            kill_all(*job_processes(again), again)
    assert again.returncode == 0, stderr[-3000:]
    assert "resuming" in stderr and "already in use" not in stderr
    rows = [r for s in sorted((out / "scores").glob("part-*.parquet")) for r in pq.read_table(s).to_pylist()]
    assert len(rows) == len({r["row_id"] for r in rows}) == ROWS
    assert all(r["errors"] is None for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == ROWS and 0 < summary["resumed_rows"] < ROWS


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_job_takes_its_processes_with_it(tmp_path, signum):
    out, port = tmp_path / "out", free_port()
    job, processes = start(out, port), []
    try:
        wait_for(lambda: any((out / "scores").glob("part-*.manifest.json")), 900, job)
        processes = job_processes(job)
        job.send_signal(signum)
        job.wait(timeout=60)
        alive = still_running(processes, 10)
        assert not alive, f"outlived the stopped job by 10 s: {[(p.pid, p.name()) for p in alive]}"
    finally:
        kill_all(job, *processes)
    assert job.returncode in (1, 130), job.stderr.read()[-3000:]  # interrupted, what was judged is on disk
    assert any((out / "scores").glob("part-*.manifest.json"))
