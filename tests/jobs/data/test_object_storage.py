"""output.dir and dataset.path on object storage (s3://), against a real S3-compatible server on
loopback (moto's server mode, tests/jobs/data/conftest.py): shards and manifests, resume, the
lock (a lease), a dataset read from a bucket, W&B references - the guarantees of local disk.

The judge is the stub (a real OpenAI-shaped HTTP server) where the engine does not matter."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from jobs.commands.score import ScoreRun, run
from jobs.config import load_config
from jobs.data import storage
from jobs.data.datasource import resolve_paths
from jobs.data.lock import LOCK_FILE, OutputLock
from jobs.data.shards import prepare_output_dir
from jobs.data.storage import StorageError, UriPath
from jobs.errors import ConfigError, DatasetError, OutputError
from tests.conftest import QUICKSTART, REPO
from tests.wandb_records import offline_run_file, read_records

RUBRIC = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}


def rows(n):
    return [{"instruction": f"question {i}", "response": f"answer {i}", "rubric": RUBRIC} for i in range(n)]


def jsonl(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def config(stub, path, out, *more):
    return load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", f"dataset.path={path}",
                                    f"output.dir={out}", "output.shard_rows=4", "output.group_by=[]",
                                    "sampling.num_samples=1", "tracking.mode=disabled", *more])


def keys(s3, prefix=""):
    """The objects under a prefix, less pyarrow's empty "dir/" markers."""
    listed = s3.client.list_objects_v2(Bucket=s3.bucket, Prefix=prefix)
    return sorted(o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/"))


def s3fs(s3):
    """pyarrow's own S3 filesystem, as a reader of the output would make it."""
    return pafs.S3FileSystem(endpoint_override=s3.endpoint, region="us-east-1", access_key="testing",
                             secret_key="testing")


def shard_rows(s3, out_key):
    fs = s3fs(s3)
    shards = sorted(k for k in keys(s3, f"{out_key}/scores/") if k.endswith(".parquet"))
    return [r for k in shards for r in pq.read_table(f"{s3.bucket}/{k}", filesystem=fs).to_pylist()]


def completions(stub):
    return stub.stats.by_path.get("/v1/completions", 0)


# -- storage, lock and errors (no Ray) --------------------------------------------------------------
def test_a_uri_is_joined_named_and_written_like_a_path(s3):
    out = storage.location(f"{s3.uri}/run/")
    shard = out / "scores" / "part-00000.parquet"
    assert isinstance(out, UriPath) and str(shard) == f"{s3.uri}/run/scores/part-00000.parquet"
    assert shard.name == "part-00000.parquet" and shard.stem == "part-00000" and shard.suffix == ".parquet"
    assert shard.with_name("x.json").uri == f"{s3.uri}/run/scores/x.json" and shard.parent.parent == out
    storage.write_atomic(out / "a.json", b'{"a": 1}')
    assert storage.read_json(out / "a.json") == {"a": 1} and storage.is_file(out / "a.json")
    assert storage.list_dir(out) == [out / "a.json"] and storage.list_dir(out / "none") == []
    storage.delete(out / "a.json")
    storage.delete(out / "a.json")  # gone already: nothing happens
    assert keys(s3) == []
    assert storage.location("~/x") == storage.location("~/x").expanduser()  # local paths stay Paths


def test_output_dir_errors_name_the_uri_and_what_to_do(s3, monkeypatch):
    with pytest.raises(OutputError, match=r"bucket of 's3://no-such-bucket-here/run' does not exist.*create it"):
        prepare_output_dir("s3://no-such-bucket-here/run")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    with pytest.raises(OutputError, match=r"cannot reach the S3 endpoint http://127.0.0.1:1 for 's3://.*AWS_ENDPOINT_URL"):
        prepare_output_dir(f"{s3.uri}/run")
    with pytest.raises(StorageError, match=r"output.dir: 'nosuch://x/y' names no filesystem"):
        prepare_output_dir("nosuch://x/y")


def test_dataset_uri_that_matches_nothing_is_refused(s3):
    with pytest.raises(DatasetError, match="matches no file"):
        resolve_paths(f"{s3.uri}/absent.jsonl")
    s3.client.put_object(Bucket=s3.bucket, Key="d/a.jsonl", Body=jsonl(rows(2)))
    s3.client.put_object(Bucket=s3.bucket, Key="d/sub/b.jsonl", Body=jsonl(rows(1)))
    s3.client.put_object(Bucket=s3.bucket, Key="d/notes.txt", Body=b"x")
    assert [str(f) for f in resolve_paths(f"{s3.uri}/d")] == [f"{s3.uri}/d/a.jsonl", f"{s3.uri}/d/sub/b.jsonl"]
    assert [str(f) for f in resolve_paths(f"{s3.uri}/d/*.jsonl")] == [f"{s3.uri}/d/a.jsonl"]
    assert [str(f) for f in resolve_paths(f"{s3.uri}/d/**/*.jsonl")] == [f"{s3.uri}/d/a.jsonl", f"{s3.uri}/d/sub/b.jsonl"]


def test_the_lease_refuses_a_second_holder_and_is_gone_after_release(s3):
    out = storage.location(f"{s3.uri}/run")
    with OutputLock.acquire(out):
        held = json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"run/{LOCK_FILE}")["Body"].read())
        assert held["pid"] == os.getpid()
        with pytest.raises(OutputError, match=rf"'{out}' is in use by another judgefleet job \(pid {os.getpid()} on "):
            OutputLock.acquire(out)
    assert keys(s3) == []
    OutputLock.acquire(out).release()


def test_a_renewed_lease_holds_past_its_length_and_a_stale_one_is_taken_over(s3):
    out = storage.location(f"{s3.uri}/run")
    with OutputLock.acquire(out, lease_s=2):
        time.sleep(3)  # renewed every 0.5 s: still held
        with pytest.raises(OutputError, match="in use"):
            OutputLock.acquire(out)
    # A lease left by a job on another host: refused while fresh, taken over once stale.
    s3.client.put_object(Bucket=s3.bucket, Key=f"run/{LOCK_FILE}",
                         Body=json.dumps({"pid": 1, "host": "elsewhere", "token": "t", "lease_s": 2}).encode())
    with pytest.raises(OutputError, match=r"pid 1 on elsewhere, renewed \d+ s ago.*not renewed for 2 s is taken over"):
        OutputLock.acquire(out)
    time.sleep(3.5)
    with OutputLock.acquire(out):
        assert json.loads(s3.client.get_object(Bucket=s3.bucket, Key=f"run/{LOCK_FILE}")["Body"].read())["pid"] \
            == os.getpid()


def test_a_lease_of_a_killed_job_on_this_host_is_taken_over_at_once(s3):
    code = ("import sys, time; from jobs.data import storage; from jobs.data.lock import OutputLock; "
            f"OutputLock.acquire(storage.location({s3.uri + '/run'!r})); print('held', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            OutputLock.acquire(storage.location(f"{s3.uri}/run"))
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    finally:
        holder.kill()
        holder.wait()
    OutputLock.acquire(storage.location(f"{s3.uri}/run")).release()  # the pid is gone: no wait for the lease


def test_a_job_that_lost_its_lease_stops_before_its_next_shard(s3):
    out = storage.location(f"{s3.uri}/run")
    lock = OutputLock.acquire(out, lease_s=1)
    try:
        s3.client.put_object(Bucket=s3.bucket, Key=f"run/{LOCK_FILE}", Body=b'{"token": "another job"}')
        time.sleep(1)  # the next renewal finds another job's ETag
        with pytest.raises(OutputError, match="lost its lock"):
            lock.check()
    finally:
        lock.release()
    assert s3.client.get_object(Bucket=s3.bucket, Key=f"run/{LOCK_FILE}")["Body"].read() == b'{"token": "another job"}'


# -- score jobs (Ray) ---------------------------------------------------------------------------
@pytest.mark.integration
def test_score_writes_shards_manifests_and_summary_to_s3(ray_session, stub, write_jsonl, s3):
    path = write_jsonl(rows(10))
    summary = run(config(stub, path, f"{s3.uri}/run"))
    assert summary["rows"] == 10 and summary["output_dir"] == f"{s3.uri}/run" and summary["shards"] == 3
    got = shard_rows(s3, "run")
    assert len(got) == len({r["row_id"] for r in got}) == 10
    assert sorted(r["instruction"] for r in got) == sorted(r["instruction"] for r in rows(10))
    assert keys(s3) == [f"run/{n}" for n in ("job.json", "report.html")] + [
        f"run/scores/part-0000{i}.{kind}" for i in range(3) for kind in ("manifest.json", "parquet")] + ["run/summary.json"]
    manifest = json.loads(s3.client.get_object(Bucket=s3.bucket, Key="run/scores/part-00002.manifest.json")["Body"].read())
    assert manifest["rows"] == 2 and len(manifest["row_ids"]) == 2
    assert json.loads(s3.client.get_object(Bucket=s3.bucket, Key="run/summary.json")["Body"].read())["rows"] == 10


@pytest.mark.integration
def test_a_stopped_job_resumes_from_s3_and_finishes(ray_session, stub, write_jsonl, s3):
    path, out = write_jsonl(rows(12)), f"{s3.uri}/run"

    def stop_after_a_shard(_rows):
        if keys(s3, "run/scores/part-00000.manifest"):
            raise KeyboardInterrupt  # as Ctrl-C would: the rows judged so far are on S3

    stub.behaviour.delay_s = 0.05
    with pytest.raises(KeyboardInterrupt):
        ScoreRun(config(stub, path, out, "judge.max_in_flight=1"), on_batch=stop_after_a_shard).run()
    done = shard_rows(s3, "run")
    assert 4 <= len(done) < 12 and not keys(s3, f"run/{LOCK_FILE}")  # the lease went with the job
    stub.stats.by_path.clear()
    stub.behaviour.delay_s = 0.0

    again = run(config(stub, path, out))
    got = shard_rows(s3, "run")
    assert len(got) == len({r["row_id"] for r in got}) == 12  # the rest, nothing judged twice
    assert again["resumed_rows"] == len(done) and again["rows_this_run"] == 12 - len(done) and again["rows"] == 12
    assert {r["row_id"] for r in done} <= {r["row_id"] for r in got}


@pytest.mark.integration
def test_a_second_job_on_the_same_s3_dir_is_refused_while_the_first_holds_it(ray_session, stub, write_jsonl, s3):
    path, out = write_jsonl(rows(3)), f"{s3.uri}/run"
    with OutputLock.acquire(storage.location(out)):
        with pytest.raises(OutputError, match=f"'{out}' is in use by another judgefleet job"):
            run(config(stub, path, out))
    assert keys(s3, "run/scores/") == [] and completions(stub) == 0
    assert run(config(stub, path, out))["rows"] == 3


@pytest.mark.integration
def test_a_dataset_on_s3_is_read_and_a_changed_one_is_refused(ray_session, stub, s3, tmp_path):
    s3.client.put_object(Bucket=s3.bucket, Key="data/part-a.jsonl", Body=jsonl(rows(5)))
    s3.client.put_object(Bucket=s3.bucket, Key="data/part-b.jsonl", Body=jsonl(rows(8)[5:]))
    out = tmp_path / "out"
    summary = run(config(stub, f"{s3.uri}/data/*.jsonl", out))
    assert summary["rows"] == 8 and summary["dataset"] == f"{s3.uri}/data/*.jsonl"
    job = json.loads((out / "job.json").read_text())
    assert [e["path"] for e in job["inputs"]] == [f"{s3.uri}/data/part-a.jsonl", f"{s3.uri}/data/part-b.jsonl"]
    s3.client.put_object(Bucket=s3.bucket, Key="data/part-a.jsonl", Body=jsonl(rows(5)[::-1]))
    with pytest.raises(ConfigError, match=rf"dataset file '{s3.uri}/data/part-a.jsonl' changed"):
        run(config(stub, f"{s3.uri}/data/*.jsonl", out))


@pytest.mark.integration
def test_wandb_offline_run_references_the_s3_objects(ray_session, stub, write_jsonl, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))  # the W&B run stays on local disk
    data = jsonl(rows(5))
    s3.client.put_object(Bucket=s3.bucket, Key="in/data.jsonl", Body=data)
    run(config(stub, f"{s3.uri}/in/data.jsonl", f"{s3.uri}/run", "tracking.mode=offline"))
    (_,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    records = read_records(offline_run_file(tmp_path))
    artifacts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    (scores,) = [a for a in artifacts if a.type == "scores"]
    entries = {e.path: e for e in scores.manifest.contents}
    assert set(entries) == {"part-00000.parquet", "part-00000.manifest.json", "part-00001.parquet",
                            "part-00001.manifest.json", "summary.json"}
    for name, entry in entries.items():
        key = f"run/{name}" if name == "summary.json" else f"run/scores/{name}"
        assert entry.ref == f"{s3.uri}/{key}"
        assert entry.digest == s3.client.head_object(Bucket=s3.bucket, Key=key)["ETag"].strip('"')
    # The input (an offline run names it in its config): the object by URI, size and sha256.
    inputs = [json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update if u.key == "inputs"][-1]
    assert inputs["dataset"]["files"] == [{"path": f"{s3.uri}/in/data.jsonl", "bytes": len(data),
                                           "sha256": hashlib.sha256(data).hexdigest()}]
    assert scores.metadata and json.loads(scores.metadata)["inputs"]["dataset"]["files"] == inputs["dataset"]["files"]
    assert not keys(s3, "run/wandb")
