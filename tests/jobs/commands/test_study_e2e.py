"""`judgefleet study` end to end on the bundled judge: a two-rung ladder made in the model cache,
both rungs served together on one route (the real llama.cpp engine), each timed alone, then both
scoring the same rows twice at once; then a re-run that keeps every finished run and scores only
the one that was lost."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration

ROWS = 3


def summary(path):
    return json.loads((path / "summary.json").read_text())


def test_a_small_study_serves_the_rungs_together_and_resumes(ray_session, bundled_model, tmp_path, capsys):
    out = tmp_path / "study"
    args = ["study", str(REPO / "conf" / "study.yaml"), "study.ladder=[Q8_0,Q2_K]", "study.original=null",
            "serve.models=[{id: g, engine: llama.cpp, context_length: 1536, parallel: 2, cache_slots: 2, threads: 1}]",
            f"dataset.limit={ROWS}", "sampling.num_samples=1", "sampling.max_tokens=24", "study.speed_rows=1",
            "study.resamples=100", f"serve.port={free_port()}", f"output.dir={out}", "tracking.mode=offline"]
    assert main(args) == 0
    result = json.loads((out / "study.json").read_text())
    ladder = {j["id"]: j for j in result["judges"]}
    assert set(ladder) == {"g-q8_0", "g-q2_k"} and result["original"] == "g-q8_0"  # the most precise rung
    for judge_id, judge in ladder.items():
        for repeat in (1, 2):
            run = out / "runs" / judge_id / f"r{repeat}"
            assert summary(run)["rows"] == ROWS
            rows = [r for f in sorted((run / "scores").glob("part-*.parquet")) for r in pq.read_table(f).to_pylist()]
            assert len(rows) == ROWS
            # The route served each judge from its own rung's file.
            assert {r["judge_model"] for r in rows} == {judge_id}
            assert {r["judge_model_sha256"] for r in rows} == {judge["file"]["sha256"]}
        assert summary(out / "speed" / judge_id)["rows"] == 1
    seeds = {json.loads((out / "runs" / "g-q8_0" / f"r{k}" / "job.json").read_text())["fingerprint"]["sampling.seed"]
             for k in (1, 2)}
    assert len(seeds) == 2  # the repeats draw other samples
    speed = {s["judge"]: s for s in result["speed"]}
    for s in speed.values():
        assert s["samples_per_s"] > 0 and s["measured"] == "alone"
        assert 200e6 < s["peak_memory_bytes"] < 8e9  # the replica holds at least its weights
    assert speed["g-q2_k"]["file_bytes"] < speed["g-q8_0"]["file_bytes"]
    quality = {q["judge"]: q for q in result["quality"]}
    assert quality["g-q8_0"]["is_original"] and quality["g-q2_k"]["pearson_original"]["with"] == "g-q8_0#r2"
    assert all(q["pearson_original"]["n"] + q["pearson_original"]["rows_missing"] == ROWS
               for q in quality.values() if q["pearson_original"]["n"])
    assert (out / "report.html").is_file() and "## Quality" in (out / "study.md").read_text()
    assert list((out / "wandb").glob("offline-run-*"))

    # Lose one run: the re-run scores that one again and keeps the rest, and the speeds measured before.
    shutil.rmtree(out / "runs" / "g-q2_k" / "r2")
    kept = summary(out / "runs" / "g-q8_0" / "r1")
    capsys.readouterr()
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "measured before" in err
    assert summary(out / "runs" / "g-q2_k" / "r2")["rows_this_run"] == ROWS
    again = summary(out / "runs" / "g-q8_0" / "r1")
    assert again["rows_this_run"] == 0 and again["resumed_rows"] == ROWS and again["rows"] == kept["rows"]
