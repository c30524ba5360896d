"""`judgefleet bench` end to end, small: three methods on the same rows, a report with every number."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port
from tests.wandb_records import offline_run_file, read_records

pytestmark = pytest.mark.integration


def test_bench_runs_three_methods_and_writes_the_report(tmp_path, bundled_model):
    out = tmp_path / "bench-out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "bench", "conf/bench.yaml", "dataset.limit=2", "sampling.num_samples=2",
         "sampling.max_tokens=8", f"serve.port={free_port()}", f"output.dir={out}", "ray.num_cpus=6",
         "bench.evaluation_rows=100", "bench.article_logits_all=false",
         "bench.machines=[{name: small, usd_per_hour: 0.5}, {name: big, usd_per_hour: 2.0}]"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench" / "bench.json").read_text())
    assert set(report["results"]) == {"article", "engine", "judgefleet"}
    for name, r in report["results"].items():
        assert r["rows"] == 2 and r["samples"] == 4, (name, r)
        assert r["samples_per_s"] > 0 and r["completion_tokens"] > 0 and r["peak_memory_mib"] > 100
        assert r["time_s"] > 0 and r["startup_s"] >= 0
    # The judge protocol always yields a score; the article's text parsing may not.
    assert report["results"]["engine"]["parse_rate"] == report["results"]["judgefleet"]["parse_rate"] == 1.0
    assert set(report["ratios"]) == {"judgefleet/article", "judgefleet/engine", "engine/article"}
    costs = {(c["method"], c["machine"]): c for c in report["costs"]}
    assert len(costs) == 6 and report["evaluation"]["judgments"] == 200
    small, big = costs[("engine", "small")], costs[("engine", "big")]
    assert big["usd"] == pytest.approx(4 * small["usd"], rel=0.01)
    assert small["usd_per_1000_judgments"] == pytest.approx(small["usd"] / 200 * 1000, rel=0.01)
    md = (out / "bench" / "bench.md").read_text()
    assert "| article |" in md and "| judgefleet |" in md and "$ per 1,000 judgments" in md
    # Lineage: a W&B run of job_type bench that logged the report and names its dataset.
    records = read_records(offline_run_file(out / "bench"))
    assert next(r.run.job_type for r in records if r.WhichOneof("record_type") == "run") == "bench"
    reports = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "bench-report"]
    assert len(reports) == 1 and {e.path for e in reports[0].manifest.contents} == {"bench.json", "bench.md"}
    inputs = [json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update if u.key == "inputs"]
    assert inputs[-1]["dataset"]["files"][0]["path"].endswith("quickstart.jsonl")
