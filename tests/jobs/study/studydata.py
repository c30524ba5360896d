"""A finished study made by hand: score dirs for two judges x two repeats over scoredirs' 24 rows
(8 questions x 3 answers, reference `gold`), speed dirs with their summaries - what
`judgefleet study` leaves before its analysis, without Ray or a judge."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from jobs.config import load_study_config
from jobs.study.plan import StudyJudge, StudyPlan, run_dir, speed_dir
from tests.conftest import REPO
from tests.jobs.agreement.scoredirs import gold_mean, records, write_data, write_score_dir

ORIGINAL, RUNG = "orig-16bit", "<b>g-q2_k</b>"  # a hostile name: the report must escape it


def samples(seed: int, noise: float, n: int = 24):
    """Three 1-5 samples per row that follow the reference (plus noise); a few unscored."""
    rng = np.random.default_rng(seed)
    rows = records()
    out = []
    for i, r in enumerate(rows):
        base = gold_mean(r) or 3.0
        s = [int(np.clip(round(base + rng.normal(0, noise)), 1, 5)) for _ in range(3)]
        if (i + seed) % 11 == 0:
            s[1] = None  # a sample that did not parse
        out.append(s)
    out[7] = None if seed % 2 else out[7]  # one row unscored in some runs
    return out


def make_study(tmp: Path, repeats: int = 2):
    rows = records()
    data = write_data(tmp / "data.jsonl", rows)
    out = tmp / "study"
    judges = [StudyJudge(RUNG, "llama.cpp", "Q2_K", {"path": "/m/q2.gguf", "bytes": 237_000_000, "sha256": "ab" * 32,
                                                      "bits_per_weight": 7.07}),
              StudyJudge(ORIGINAL, "vllm", model="bundled:gemma3-270m-q4_k_m")]
    noise = {RUNG: 1.4, ORIGINAL: 0.6}
    for j, judge in enumerate(judges):
        for k in range(1, repeats + 1):
            d = write_score_dir(run_dir(out, judge.id, k), rows, samples(10 * j + k, noise[judge.id]), judge.id)
            (d / "summary.json").write_text(json.dumps({"rows": 24, "rows_this_run": 24, "parse_rate": 0.95,
                                                        "samples_per_s": 0.5 + j, "completion_tokens_per_s": 40.0}))
        speed = speed_dir(out, judge.id)
        speed.mkdir(parents=True)
        (speed / "summary.json").write_text(json.dumps({"rows": 4, "rows_this_run": 4, "samples_per_s": 1.0 + j,
                                                        "completion_tokens_per_s": 60.0 + j, "tokens_per_s": 900.0}))
    cfg = load_study_config(REPO / "conf" / "study.yaml", [
        f"dataset.path={data}", "study.reference=gold", "study.group=idx", f"study.repeats={repeats}",
        "study.resamples=200", "bench.machines=[{name: box, usd_per_hour: 0.5}]", "bench.evaluation_rows=320"])
    plan = StudyPlan(judges, ORIGINAL, "g")
    peaks = {RUNG: 900_000_000, ORIGINAL: 1_500_000_000}
    return SimpleNamespace(cfg=cfg, plan=plan, out=out, data=data, peaks=peaks, rows=rows)
