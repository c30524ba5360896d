"""`judgefleet bench` end to end, small: the methods on the same rows, a report with every number.

llama-server runs when its binary is built (python -m benchmarks.build_llama_server), and is
skipped with one line when not (CI). vLLM is left out: it takes minutes to start."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO, free_port
from tests.wandb_records import offline_run_file, read_records

pytestmark = pytest.mark.integration


def test_bench_runs_the_methods_and_writes_the_report(tmp_path, bundled_model):
    out = tmp_path / "bench-out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "bench", "conf/bench.yaml", "dataset.limit=2", "sampling.num_samples=2",
         "sampling.max_tokens=8", f"serve.port={free_port()}", f"output.dir={out}", "ray.num_cpus=6",
         "bench.evaluation_rows=100", "bench.methods=[article,engine,judgefleet,llama-server]",
         "bench.llama_server_parallel=[2]",
         "bench.machines=[{name: small, usd_per_hour: 0.5}, {name: big, usd_per_hour: 2.0}]"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "bench" / "bench.json").read_text())
    from jobs.bench.llama_server import BUILD_COMMAND, find_binary

    built = find_binary() is not None
    assert set(report["results"]) == {"article", "engine", "judgefleet"} | ({"llama-server"} if built else set())
    assert (BUILD_COMMAND in result.stderr) != built
    for name, r in report["results"].items():
        assert r["rows"] == 2 and r["samples"] == 4, (name, r)
        assert r["samples_per_s"] > 0 and r["completion_tokens"] > 0 and r["time_s"] > 0 and r["startup_s"] >= 0
        # Memory of the method's server tree, no shared page counted twice: PSS within summed RSS, USS within PSS.
        assert 100 < r["peak_pss_mib"] <= r["peak_rss_sum_mib"] * 1.05 and 0 < r["peak_uss_mib"] <= r["peak_pss_mib"]
    assert "logits_all=False" in report["results"]["article"]["how"]
    if built:
        assert report["results"]["llama-server"]["parallel"] == 2 and set(report["results"]["llama-server"]["by_parallel"]) == {"2"}
    # The judge protocol always yields a score; the article's text parsing may not.
    assert report["results"]["engine"]["parse_rate"] == report["results"]["judgefleet"]["parse_rate"] == 1.0
    assert {"judgefleet/article", "judgefleet/engine", "engine/article"} <= set(report["ratios"])
    costs = {(c["method"], c["machine"]): c for c in report["costs"]}
    assert len(costs) == 2 * len(report["results"]) and report["evaluation"]["judgments"] == 200
    small, big = costs[("engine", "small")], costs[("engine", "big")]
    assert big["usd"] == pytest.approx(4 * small["usd"], rel=0.01)
    assert small["usd_per_1000_judgments"] == pytest.approx(small["usd"] / 200 * 1000, rel=0.01)
    md = (out / "bench" / "bench.md").read_text()
    assert "| article |" in md and "| judgefleet |" in md and "$ per 1,000 judgments" in md
    # The article-style table: every method measured here, projected to 320 x 3 at the first machine's price.
    seed = report["seed_table"]
    assert [r["method"] for r in seed["ours"]] == list(report["results"]) and seed["price"]["usd_per_hour"] == 0.5
    assert "| the article's | llamafile | 1x NVIDIA A100 (GPU) | 44 |" in md and "8h05'" in md
    # Lineage: a W&B run of job_type bench that logged the report and names its dataset.
    records = read_records(offline_run_file(out / "bench"))
    assert next(r.run.job_type for r in records if r.WhichOneof("record_type") == "run") == "bench"
    reports = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact" and r.artifact.type == "bench-report"]
    assert len(reports) == 1 and {e.path for e in reports[0].manifest.contents} == {"bench.json", "bench.md"}
    inputs = [json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update if u.key == "inputs"]
    assert inputs[-1]["dataset"]["files"][0]["path"].endswith("quickstart.jsonl")
