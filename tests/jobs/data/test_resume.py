"""Re-running a job on the same output dir: finished shards are kept, the rest is scored, once.

The judge is the stub (a real OpenAI-shaped HTTP server): these tests count its requests to
prove which rows were judged again, which no real engine can report.
"""

import json
import os

import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from jobs.errors import ConfigError
from jobs.data.resume import JudgeChangedError
from jobs.commands.score import run
from tests.conftest import QUICKSTART

pytestmark = pytest.mark.integration

RUBRIC = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}


def rows(n):
    # Row 7 repeats row 3: its id is the content hash plus "-2", stable across runs.
    out = [{"instruction": f"question {i}", "response": f"answer {i}", "rubric": RUBRIC} for i in range(n)]
    out[7] = dict(out[3])
    return out


def config(stub, path, out, *more):
    return load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", f"dataset.path={path}",
                                    f"output.dir={out}", "output.shard_rows=10", "output.group_by=[]",
                                    "tracking.mode=disabled", *more])


def scored_ids(out):
    shards = sorted((out / "scores").glob("part-*.parquet"))
    return [rid for s in shards for rid in pq.read_table(s, columns=["row_id"]).column("row_id").to_pylist()]


def completions(stub):
    return stub.stats.by_path.get("/v1/completions", 0)


def test_rerun_scores_only_rows_outside_finished_shards(ray_session, stub, write_jsonl, tmp_path):
    path, out = write_jsonl(rows(25)), tmp_path / "out"
    first = run(config(stub, path, out))
    per_row = completions(stub) / 25
    ids = scored_ids(out)
    assert first["rows"] == 25 and len(set(ids)) == 25 and sum(i.endswith("-2") for i in ids) == 1

    # A killed run leaves a shard without its manifest and a temporary file: both are unfinished.
    (out / "scores" / "part-00002.manifest.json").unlink()
    (out / "scores" / ".part-00003.parquet.tmp").write_bytes(b"half a shard")
    kept = {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("part-0000[01].*")}
    stub.stats.by_path.clear()

    again = run(config(stub, path, out))
    assert completions(stub) == 5 * per_row  # the 5 rows of the unfinished shard, nothing else
    assert sorted(scored_ids(out)) == sorted(ids)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "scores").glob("part-0000[01].*")} == kept
    assert not list((out / "scores").glob(".*tmp"))
    assert again["rows"] == 25 and again["resumed_rows"] == 20 and again["rows_this_run"] == 5
    assert again["scored"] == 25 and again["shards"] == 3

    stub.stats.by_path.clear()
    run(config(stub, path, out))  # nothing left: nothing is sent
    assert completions(stub) == 0 and sorted(scored_ids(out)) == sorted(ids)

    # A larger limit scores the new rows only.
    more = write_jsonl(rows(25) + [{"instruction": "late", "response": "row", "rubric": RUBRIC}], name="more.jsonl")
    os.replace(more, path)
    stub.stats.by_path.clear()
    run(config(stub, path, out))
    assert completions(stub) == per_row and len(set(scored_ids(out))) == 26


def test_other_settings_are_refused_and_restart_starts_over(ray_session, stub, write_jsonl, tmp_path):
    path, out = write_jsonl(rows(12)), tmp_path / "out"
    run(config(stub, path, out))
    with pytest.raises(ConfigError, match=r"sampling\.temperature: 1\.0 -> 0\.5.*--restart"):
        run(config(stub, path, out, "sampling.temperature=0.5"))
    # Speed settings are not verdict settings: they may change between runs.
    run(config(stub, path, out, "judge.max_in_flight=2", "judge.timeout_s=30"))

    stub.stats.by_path.clear()
    summary = run(config(stub, path, out, "sampling.temperature=0.5"), restart=True)
    assert summary["rows"] == 12 and summary["resumed_rows"] == 0 and completions(stub) > 0
    assert len(scored_ids(out)) == 12
    assert json.loads((out / "job.json").read_text())["fingerprint"]["sampling.temperature"] == 0.5


def test_other_weights_behind_the_same_name_are_refused(ray_session, stub, write_jsonl, tmp_path):
    path, out = write_jsonl(rows(15)), tmp_path / "out"
    stub.behaviour.lineage = {"backend": "llama.cpp", "model": "stub-judge", "member": "m0", "model_sha256": "a" * 64}
    run(config(stub, path, out))
    (out / "scores" / "part-00001.manifest.json").unlink()
    stub.behaviour.lineage = {"backend": "llama.cpp", "model": "stub-judge", "member": "m0", "model_sha256": "b" * 64}
    with pytest.raises(JudgeChangedError, match="member 'm0' now answers with weights bbbbbbbbbbbb"):
        run(config(stub, path, out))
    assert len(scored_ids(out)) == 10  # the finished shard is untouched, nothing was added


def test_retry_errors_judges_again_only_the_rows_that_failed(ray_session, stub, write_jsonl, tmp_path):
    path, out = write_jsonl(rows(20)), tmp_path / "out"
    stub.behaviour.fail_first = 10  # the judge is down for the first requests; no retries: those rows fail
    first = run(config(stub, path, out, "judge.max_retries=0", "judge.max_in_flight=1", "judge.clients=1"))
    failed = first["rows_with_errors"]
    assert 0 < failed < 20 and first["rows"] == 20

    stub.stats.by_path.clear()
    run(config(stub, path, out))  # a plain re-run keeps them: they are finished, with their errors
    assert completions(stub) == 0

    again = run(config(stub, path, out), retry_errors=True)
    assert 0 < completions(stub) and again["rows"] == 20 and again["rows_with_errors"] == 0
    assert again["resumed_rows"] == 20 - failed and again["rows_this_run"] == failed
    ids = scored_ids(out)
    assert len(ids) == len(set(ids)) == 20
    for shard in (out / "scores").glob("part-*.parquet"):  # every manifest still matches its shard
        manifest = json.loads(shard.with_name(shard.name.replace(".parquet", ".manifest.json")).read_text())
        assert manifest["row_ids"] == pq.read_table(shard).column("row_id").to_pylist()
