"""Hostile datasets scored end to end (issue 11): hypothesis-drawn JSON, JSONL, CSV and Parquet
files through the real pipeline (real Ray Data, the stand-in judge over HTTP), each run stopped
after its first shard and resumed; one real `kill -9` of a `judgefleet score` process; two jobs
on one output dir.

Properties: the job ends; one output row per input row; unique row ids; every unscored row carries
its error with a reason code; every input value is kept; shards share one schema. This is the
fixed-seed slice CI runs; benchmarks/dataset_fuzz.py runs the long campaign.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from jobs.commands.score import ScoreRun, run
from jobs.config import load_config
from jobs.errors import OutputError
from jobs.runtime.pipeline import RESULT_COLUMNS
from tests.conftest import QUICKSTART, REPO
from tests.jobs.data import fuzz_datasets as fuzz
from tests.stub_openai import StubBehaviour, StubOpenAIServer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def judge():
    """One stand-in judge for the module (hypothesis runs many examples in one test)."""
    server = StubOpenAIServer(StubBehaviour(), keep_bodies=False).start()
    yield server
    server.stop()


def overrides(url, exp, out, *more):
    return [f"judge.url={url}", "judge.model=stub-judge", f"dataset.path={exp.path}", f"output.dir={out}",
            "output.shard_rows=40", "output.group_by=[]", "tracking.mode=disabled", "sampling.num_samples=1",
            "judge.max_in_flight=16", "judge.max_retries=1", "judge.timeout_s=20",
            *([f"dataset.id_field={exp.id_field}"] if exp.id_field else []), *more]


class Stop(Exception):
    """Stands in for a kill: the run ends after its first shard, with what it judged on disk."""


def stopped_then_resumed(cfg, out: Path, quiet) -> dict:
    def stop_after_first_shard(_rows):
        if any((out / "scores").glob("part-*.manifest.json")):
            raise Stop

    try:
        ScoreRun(cfg, quiet, on_batch=stop_after_first_shard).run()
    except Stop:
        manifests = sorted((out / "scores").glob("part-*.manifest.json"))
        if len(manifests) > 1:  # and a kill mid-write: the last shard is left without its manifest
            manifests[-1].unlink()
    return run(cfg, console=quiet)


def quiet_console():
    from rich.console import Console

    return Console(file=open(os.devnull, "w"))


@settings(max_examples=8, deadline=None, database=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(plan=fuzz.plans(max_rows=400))
def test_fuzzed_datasets_are_scored_whole_and_resumed_whole(ray_session, judge, plan):
    with tempfile.TemporaryDirectory() as tmp:
        exp = fuzz.write(plan, Path(tmp) / "data")
        out = Path(tmp) / "out"
        started = time.monotonic()
        summary = stopped_then_resumed(load_config(QUICKSTART, overrides(judge.url, exp, out)), out, quiet_console())
        assert time.monotonic() - started < 120, plan.describe()
        problems = fuzz.check_output(exp, out, RESULT_COLUMNS)
        assert summary["rows"] == len(exp.records) and not problems, f"{plan.describe()}\n" + "\n".join(problems)


HOSTILE_PLAN = fuzz.Plan(fmt="mixed", rows=240, seed=11, bom=True, id_field=True,
                         columns=[("c0", "int", "str", 90), ("c1", "null", "dict", 150), ("c2", "float", "list", 30)],
                         hostile={i: fuzz.HOSTILE[i % len(fuzz.HOSTILE)] for i in range(0, 240, 7)},
                         texts=["\u0000", "\U0001F600", "\u202e"])


def test_a_job_killed_9_on_a_hostile_dataset_resumes_whole(ray_session, tmp_path):
    """A real `kill -9` of the driver mid-run; the next run is not blocked by its lock, keeps its
    finished shards and ends with every row once."""
    stub = StubOpenAIServer(StubBehaviour(delay_s=0.05), keep_bodies=False).start()
    try:
        exp = fuzz.write(HOSTILE_PLAN, tmp_path / "data")
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "jobs.cli", "score", str(QUICKSTART), f"ray.address={ray_session.cluster.address}",
               *overrides(stub.url, exp, out, "output.shard_rows=20", "judge.max_in_flight=4")]
        driver = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 180
            while len(list((out / "scores").glob("part-*.manifest.json"))) < 2 and time.monotonic() < deadline:
                assert driver.poll() is None, "the job ended before it could be killed"
                time.sleep(0.05)
            os.kill(driver.pid, signal.SIGKILL)
            driver.wait(30)
        finally:
            if driver.poll() is None:
                driver.kill()
        kept = sum(json.loads(m.read_text())["rows"] for m in (out / "scores").glob("part-*.manifest.json"))
        assert 0 < kept < len(exp.records)
        stub.behaviour.delay_s = 0.0
        again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-3000:]
        assert f"resuming: {kept} rows" in again.stderr.replace("\n", " ")
        problems = fuzz.check_output(exp, out, RESULT_COLUMNS)
        assert not problems, "\n".join(problems)
    finally:
        stub.stop()


def test_a_second_job_on_the_same_output_dir_is_refused_and_the_first_ends_whole(ray_session, tmp_path):
    stub = StubOpenAIServer(StubBehaviour(delay_s=0.02), keep_bodies=False).start()
    try:
        exp = fuzz.write(fuzz.Plan(fmt="jsonl", rows=200, seed=5, bom=False, id_field=False, columns=[], hostile={},
                                   texts=["x"]), tmp_path / "data")
        out = tmp_path / "out"
        cfg = load_config(QUICKSTART, overrides(stub.url, exp, out, "judge.max_in_flight=2"))
        result = {}
        first = threading.Thread(target=lambda: result.update(summary=run(cfg, console=quiet_console())))
        first.start()
        deadline = time.monotonic() + 120
        while not list((out / "scores").glob("part-*.manifest.json")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert first.is_alive()
        in_use = rf"output.dir '{out}' is in use by another judgefleet job \(pid {os.getpid()}\)"
        with pytest.raises(OutputError, match=in_use):
            run(cfg, console=quiet_console(), restart=True)  # --restart would have deleted the first job's shards
        first.join(300)
        assert result["summary"]["rows"] == 200
        assert not fuzz.check_output(exp, out, RESULT_COLUMNS)
        assert json.loads((out / "job.json").read_text())["inputs"][0]["size"] == exp.path.stat().st_size
    finally:
        stub.stop()
