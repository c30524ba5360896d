"""W&B lineage of a score job, read back from the offline run's own transaction log."""

import base64
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from jobs.commands.score import run
from tests.conftest import QUICKSTART, QUICKSTART_DATA
from tests.wandb_records import offline_run_file, read_records

pytestmark = pytest.mark.integration


def by_type(records, kind):
    return [getattr(r, kind) for r in records if r.WhichOneof("record_type") == kind]


def md5_b64(path):
    return base64.b64encode(hashlib.md5(path.read_bytes()).digest()).decode()


def test_offline_run_records_dataset_model_and_scores(judge_route, bundled_model, tmp_path):
    url, route_cfg = judge_route
    out = tmp_path / "out"
    cfg = load_config(QUICKSTART, [f"judge.url={url}", f"judge.model={route_cfg.judge.model}", "dataset.limit=3",
                                   "sampling.num_samples=1", "sampling.max_tokens=16", f"output.dir={out}",
                                   "output.shard_rows=2", "judge.api_key=sk-secret-test"])
    summary = run(cfg)
    assert summary["rows"] == 3

    records = read_records(offline_run_file(out))
    run_record = by_type(records, "run")[0]
    assert run_record.job_type == "score" and run_record.project == "judgefleet"
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["sampling"]["num_samples"] == 1 and config["dataset"]["limit"] == 3
    assert config["judge"]["api_key"] == "<redacted>"
    assert "sk-secret-test" not in offline_run_file(out).read_bytes().decode("latin-1")

    # Inputs: the dataset by content, the judge by the weights' sha256 the replica reported.
    inputs = [json.loads(u.value_json) for c in by_type(records, "config") for u in c.update if u.key == "inputs"][-1]
    dataset_file = inputs["dataset"]["files"][0]
    assert dataset_file["path"] == str(QUICKSTART_DATA.resolve())
    assert dataset_file["sha256"] == hashlib.sha256(QUICKSTART_DATA.read_bytes()).hexdigest()
    members = inputs["model"]["members"]
    assert [m["sha256"] for m in members] == [bundled_model.sha256] and members[0]["backend"] == "llama.cpp"
    assert members[0]["rows"] == 3

    # Output: the scores artifact holds every shard and manifest with the files' md5, and names its inputs.
    artifacts = by_type(records, "artifact")
    (scores,) = [a for a in artifacts if a.type == "scores"]
    entries = {e.path: e for e in scores.manifest.contents}
    shards = sorted(p.name for p in (out / "scores").iterdir())
    assert len(shards) == 4 and set(shards) | {"summary.json"} == set(entries)
    for name in shards:
        assert entries[name].digest == md5_b64(out / "scores" / name)
        assert entries[name].ref == (out / "scores" / name).resolve().as_uri()
    meta = json.loads(scores.metadata)
    assert meta["rows"] == 3 and meta["inputs"]["dataset"]["digest"] == inputs["dataset"]["digest"]
    assert meta["inputs"]["model"]["members"][0]["sha256"] == bundled_model.sha256

    # Summary metrics and a sample table of scored rows.
    summary_items = {u.key: json.loads(u.value_json) for s in by_type(records, "summary") for u in s.update}
    assert summary_items["rows"] == 3 and summary_items["scored"] == summary["scored"]
    logged = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for h in by_type(records, "history")
              for i in h.item}
    assert logged["scored_rows/_type"] == "table-file" and logged["scored_rows/nrows"] == 2
    table = json.loads((offline_run_file(out).parent / "files" / logged["scored_rows/path"]).read_text())
    first_shard = sorted((out / "scores").glob("*.parquet"))[0]
    assert [r[0] for r in table["data"]] == pq.read_table(first_shard).column("row_id").to_pylist()
    assert by_type(records, "exit")[0].exit_code == 0
