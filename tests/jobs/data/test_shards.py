"""Shards on disk: cut by rows or by time, and told apart from what a killed run left half written."""

import json
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.data.resume import scan
from jobs.data.shards import ShardWriter, prepare_output_dir
from jobs.errors import OutputError


def batch(start, n):
    return pa.table({"row_id": [f"r{i}" for i in range(start, start + n)], "score": [4.0] * n})


def shard_sizes(scores):
    return [pq.ParquetFile(p).metadata.num_rows for p in sorted(scores.glob("part-*.parquet"))]


def test_shards_are_cut_every_n_rows_and_after_flush_s(tmp_path):
    (tmp_path / "by-rows" / "scores").mkdir(parents=True)
    writer = ShardWriter(tmp_path / "by-rows", shard_rows=10)
    for start, n in ((0, 7), (7, 7), (14, 11)):
        writer.add(batch(start, n))
    writer.close()
    assert shard_sizes(tmp_path / "by-rows" / "scores") == [10, 10, 5]

    (tmp_path / "by-time" / "scores").mkdir(parents=True)
    writer = ShardWriter(tmp_path / "by-time", shard_rows=10, flush_s=0.2)
    writer.add(batch(0, 3))
    writer.add(batch(3, 2))  # younger than flush_s: still buffered
    assert shard_sizes(tmp_path / "by-time" / "scores") == []
    time.sleep(0.25)
    writer.add(batch(5, 12))  # 10 cut by rows; the 2 left wait again
    assert shard_sizes(tmp_path / "by-time" / "scores") == [10]
    time.sleep(0.25)
    writer.add(batch(17, 1))
    assert shard_sizes(tmp_path / "by-time" / "scores") == [10, 8]
    manifest = json.loads((tmp_path / "by-time" / "scores" / "part-00001.manifest.json").read_text())
    assert manifest["rows"] == 8 and manifest["row_ids"] == [f"r{i}" for i in range(10, 18)]


def test_scan_keeps_finished_shards_and_removes_half_written_ones(tmp_path):
    scores = tmp_path / "scores"
    scores.mkdir()
    writer = ShardWriter(tmp_path, shard_rows=5)
    writer.add(batch(0, 20))
    writer.close()
    (scores / "part-00001.manifest.json").unlink()  # killed between the Parquet file and its manifest
    bad = json.loads((scores / "part-00002.manifest.json").read_text())
    (scores / "part-00002.manifest.json").write_text(json.dumps(dict(bad, rows=4)))  # does not match its shard
    (scores / "part-00003.parquet").write_bytes(b"PAR1 truncated")  # a torn file under a manifest
    (scores / ".part-00004.parquet.tmp").write_bytes(b"half")

    finished = scan(scores)
    assert [p.name for p in finished.shards] == ["part-00000.parquet"]
    assert finished.row_ids == {f"r{i}" for i in range(5)} and finished.rows == 5 and finished.next_index == 1
    assert sorted(p.name for p in scores.iterdir()) == ["part-00000.manifest.json", "part-00000.parquet"]


def test_a_relative_output_dir_inside_a_ray_jobs_working_dir_copy_is_refused(tmp_path, monkeypatch):
    """`ray job submit --working-dir .` runs the job in a copy Ray deletes: relative output would go with it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {"working_dir": "gcs://_ray_pkg_x.zip"}}))
    with pytest.raises(OutputError, match=r"output.dir: 'runs/x' is relative.*s3://"):
        prepare_output_dir("runs/x")
    assert not (tmp_path / "runs").exists()
    assert prepare_output_dir(str(tmp_path / "abs")) == tmp_path / "abs"  # an absolute path is the user's choice
    # A job without a working dir of Ray's (or no job at all) writes where it is told.
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"runtime_env": {}}))
    prepare_output_dir("runs/x")
    assert (tmp_path / "runs/x/scores").is_dir()
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR")
    prepare_output_dir("runs/y")
    assert (tmp_path / "runs/y/scores").is_dir()
