"""A finished study -> the article's two tables, as plain data.

Quality (one row per judge): Pearson of its run 1 with the original's run 2 (the article's "PCC
(orig)"; for the original itself, its run 1 against its run 2: how far a judge agrees with
itself, the ceiling for the others), Pearson with the reference column, how far that falls short
of the original's (a paired difference: the number that says "Q2_K is worse", or that the data
cannot tell), and its run-to-run Pearson. Each with a 95% bootstrap interval over rows, or over
groups of rows (study.group), from jobs.agreement.stats. Rows without a score on either side are
left out of that number and counted.

Speed and cost (one row per judge): bits, file size, peak memory of its replica, tokens/s and
samples/s measured alone (study.speed_rows) and with every judge sharing the machine, and the
time and price of the whole evaluation on each of bench.machines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from jobs.agreement import load
from jobs.agreement.compare import complete_rows
from jobs.agreement.stats import bootstrap, pearson, rng_for, units_of
from jobs.config import JobConfig
from jobs.data.costs import projected_costs
from jobs.data.summary import read_summary
from jobs.study.plan import StudyPlan, run_dir, speed_dir

log = logging.getLogger(__name__)


def source_name(judge_id: str, repeat: int) -> str:
    return f"{judge_id}#r{repeat}"


def analyze(cfg: JobConfig, study: StudyPlan, out_dir: Path, peak_memory: Dict[str, int]) -> dict:
    """The tables of a study whose runs are finished under `out_dir`. The reference and group
    columns are read from the score dirs, which keep every input column."""
    st = cfg.study
    specs = [f"{source_name(j.id, k)}={run_dir(out_dir, j.id, k)}" for j in study.judges
             for k in range(1, st.repeats + 1)]
    joined = load(specs, [st.reference] if st.reference else [], st.group)
    quality = [_quality(joined, study, j.id, st, cfg.sampling.seed or 0) for j in study.judges]
    speed = [_speed(cfg, study, j, out_dir, peak_memory.get(j.id)) for j in study.judges]
    rows_per_eval = cfg.bench.evaluation_rows or _dataset_rows(joined, study, st.repeats)
    judgments = rows_per_eval * cfg.sampling.num_samples
    costs = [c for s in speed for c in projected_costs(s["judge"], s["samples_per_s"], cfg.bench.machines, judgments)]
    return {
        "original": study.original,
        "reference": st.reference,
        "group": st.group,
        "repeats": st.repeats,
        "rows": len(joined.row_ids),
        "clusters": None if joined.groups is None else len(set(joined.groups)),
        "num_samples": cfg.sampling.num_samples,
        "confidence": 0.95,
        "resamples": st.resamples,
        "quality": quality,
        "speed": speed,
        "evaluation": {"rows": rows_per_eval, "judgments": judgments},
        "costs": costs,
        "scores": {source_name(j.id, 1): _finite(joined.scores[source_name(j.id, 1)]) for j in study.judges},
        "reference_scores": _finite(joined.scores[st.reference]) if st.reference else None,
        "notes": list(joined.notes),
    }


def _quality(joined, study: StudyPlan, judge_id: str, st, seed: int) -> dict:
    first = source_name(judge_id, 1)
    orig_second = source_name(study.original, 2 if st.repeats >= 2 else 1)
    out = {"judge": judge_id, "is_original": judge_id == study.original,
           "mean_score": _mean(joined.scores[first])}
    if judge_id == study.original and st.repeats < 2:
        out["pearson_original"] = _none("the original's run 2 is needed (study.repeats >= 2)")
    else:
        out["pearson_original"] = _pearson(joined, first, orig_second, st, seed)
    out["original_run"] = orig_second
    if st.reference:
        out["pearson_reference"] = _pearson(joined, first, st.reference, st, seed)
        out["difference_from_original"] = (_none("this is the original") if judge_id == study.original else
                                           _difference(joined, first, source_name(study.original, 1),
                                                       st.reference, st, seed))
    out["run_to_run"] = (_pearson(joined, first, source_name(judge_id, 2), st, seed) if st.repeats >= 2
                         else _none("one run (study.repeats = 1)"))
    return out



def _pearson(joined, a: str, b: str, st, seed: int) -> dict:
    rows, missing, _ = complete_rows(joined, [a, b])
    x, y = joined.scores[a], joined.scores[b]
    (r,) = bootstrap(lambda idx: np.array([pearson(x[idx], y[idx])]), units_of(rows, joined.groups),
                     st.resamples, rng_for(seed, f"study:{a}|{b}"))
    return {**r.to_dict(), "n": int(len(rows)), "rows_missing": missing, "with": b}


def _difference(joined, a: str, original: str, ref: str, st, seed: int) -> dict:
    """r(a, ref) - r(original, ref) on the same rows, from one paired bootstrap."""
    rows, missing, _ = complete_rows(joined, [a, original, ref])
    x, o, z = joined.scores[a], joined.scores[original], joined.scores[ref]
    (d,) = bootstrap(lambda idx: np.array([pearson(x[idx], z[idx]) - pearson(o[idx], z[idx])]),
                     units_of(rows, joined.groups), st.resamples, rng_for(seed, f"study-diff:{a}|{original}|{ref}"))
    return {**d.to_dict(), "n": int(len(rows)), "rows_missing": missing}


def _none(why: str) -> dict:
    return {"estimate": None, "low": None, "high": None, "method": f"none: {why}", "n": 0, "rows_missing": 0}


def _speed(cfg: JobConfig, study: StudyPlan, judge, out_dir: Path, peak_bytes: Optional[int]) -> dict:
    alone = read_summary(speed_dir(out_dir, judge.id)) if cfg.study.speed_rows else None
    runs = [read_summary(run_dir(out_dir, judge.id, k)) for k in range(1, cfg.study.repeats + 1)]
    together = [r for r in runs if r and r.get("rows_this_run")]
    file = judge.file or {}
    return {
        "judge": judge.id,
        "engine": judge.engine,
        "rung": judge.rung,
        "model": file.get("path") or judge.model,
        "bits_per_weight": file.get("bits_per_weight"),
        "file_bytes": file.get("bytes"),
        "sha256": file.get("sha256") or _sha_of(runs),
        "peak_memory_bytes": peak_bytes,
        "parse_rate": _mean([r["parse_rate"] for r in runs if r and r.get("parse_rate") is not None]),
        "alone_rows": (alone or {}).get("rows_this_run"),
        "samples_per_s": (alone or {}).get("samples_per_s") if alone else _mean([r["samples_per_s"] for r in together]),
        "completion_tokens_per_s": (alone or {}).get("completion_tokens_per_s") if alone else None,
        "tokens_per_s": (alone or {}).get("tokens_per_s") if alone else None,
        "together_samples_per_s": _mean([r["samples_per_s"] for r in together]),
        "together_completion_tokens_per_s": _mean([r["completion_tokens_per_s"] for r in together]),
        "measured": "alone" if alone else "together",
    }



def _sha_of(runs: List[Optional[dict]]) -> Optional[str]:
    """A non-ladder judge's weights, as its replicas reported them (one digest, or none when several)."""
    digests = {d for r in runs if r for d in (r.get("judge_model_sha256") or {})}
    return next(iter(digests)) if len(digests) == 1 else None


def _dataset_rows(joined, study: StudyPlan, repeats: int) -> int:
    """Rows the study scored (the first run of the original), when bench.evaluation_rows is not set."""
    return int(np.sum(joined.present[source_name(study.original, 1)]))


def _mean(values) -> Optional[float]:
    arr = np.asarray([v for v in np.asarray(values, float).ravel() if np.isfinite(v)])
    return round(float(arr.mean()), 4) if len(arr) else None


def _finite(values: np.ndarray) -> List[Optional[float]]:
    return [float(v) if np.isfinite(v) else None for v in values]
