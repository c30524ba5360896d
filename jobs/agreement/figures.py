"""What the report's plots and judge cards show, as plain data for agreement.json: every source's
score distribution, the (x, y, count) points behind each scatter, one card per judge of scores
(`judge_cards`) and one per pairwise judge of A/B verdicts (`pairwise_cards`).

The report draws from these numbers only, so whatever it shows, agreement.json holds too.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from jobs.agreement.sources import JUDGE, REFERENCE, Joined
from jobs.data.summary import read_summary

log = logging.getLogger(__name__)

MAX_PLOTTED_PAIRS = 12
_DIGITS = 4  # a mean of three samples, 3.6667, is one value; finer noise is not


def figure_data(joined: Joined, report: dict) -> dict:
    """{"distributions": {source: [[value, count], ...]}, "scatter": [{a, b, n, points: [[x, y, count]]}]}."""
    distributions = {}
    for s in joined.sources:
        col = joined.scores[s.name]
        distributions[s.name] = _counts(col[np.isfinite(col)])
    scatter = []
    for a, b in plotted_pairs(report):
        x, y = joined.scores[a], joined.scores[b]
        both = np.isfinite(x) & np.isfinite(y)
        joint = Counter(zip(np.round(x[both], _DIGITS).tolist(), np.round(y[both], _DIGITS).tolist()))
        scatter.append({"a": a, "b": b, "n": int(both.sum()),
                        "points": [[px, py, n] for (px, py), n in sorted(joint.items())]})
    return {"distributions": distributions, "scatter": scatter}


def plotted_pairs(report: dict) -> List[Tuple[str, str]]:
    """Which pairs get a scatter and a heat map: each judge against each reference (the mean of a
    reference column); without judges or references, every pair that is not a mean beside its own run."""
    kinds = {s["name"]: s["kind"] for s in report["sources"]}
    judges = [n for n, k in kinds.items() if k == JUDGE]
    refs = [n for n, k in kinds.items() if k == REFERENCE]
    if judges and refs:
        return [(j, r) for j in judges for r in refs][:MAX_PLOTTED_PAIRS]
    return [(p["a"], p["b"]) for p in report["pairs"] if not p.get("part_whole")][:MAX_PLOTTED_PAIRS]


def _counts(values: np.ndarray) -> List[List[float]]:
    rounded = np.round(values, _DIGITS)
    uniq, counts = np.unique(rounded, return_counts=True)
    return [[float(v), int(c)] for v, c in zip(uniq, counts)]


# -- judge cards -----------------------------------------------------------------------------
_SPEED = ("rows", "parse_rate", "samples_per_s", "tokens_per_s", "wall_time_s", "total_time_s")


def judge_cards(report: dict) -> List[dict]:
    """One row per judge source: its quality (agreement with the first reference, parse rate,
    self-consistency, run to run) beside its speed, as its score dir's summary.json reports them."""
    refs = [s["name"] for s in report["sources"] if s["kind"] == REFERENCE]
    ref = refs[0] if refs else None
    alphas = {s["source"]: s["krippendorff_alpha"] for s in report["self_consistency"]["samples"]}
    cards = []
    for s in report["sources"]:
        if s["kind"] != JUDGE:
            continue
        name = s["name"]
        pair = _pair(report, name, ref) if ref else None
        summary = read_summary(Path(s["origin"]))
        backends = (summary or {}).get("judge_backends") or {}
        run_to_run = [r for r in report["self_consistency"]["run_to_run"] if name in (r["a"], r["b"])]
        cards.append({
            "judge": name,
            "judge_model": s.get("judge_model"),
            "backends": sorted(backends),
            "reference": ref,
            "n": pair["n"] if pair else None,
            "pearson": pair["statistics"]["pearson"] if pair else None,
            "kappa_quadratic": pair["statistics"]["kappa_quadratic"] if pair else None,
            "self_alpha": alphas.get(name),
            "run_to_run_pearson": run_to_run[0]["pearson"] if run_to_run else None,
            "run_to_run_with": (run_to_run[0]["b"] if run_to_run[0]["a"] == name else run_to_run[0]["a"])
            if run_to_run else None,
            "summary_json": str(Path(s["origin"]) / "summary.json") if summary is not None else None,
            **{k: (summary or {}).get(k) for k in _SPEED},
        })
    return cards


# The statistics of jobs.agreement.pairwise a pairwise card shows, each with its interval.
PAIRWISE_CARD_STATISTICS = ("accuracy", "accuracy_without_ties", "position_consistency", "tie_rate")


def pairwise_cards(report: dict) -> List[dict]:
    """One row per pairwise judge (report["pairwise"]): its accuracy against the label, with and
    without ties, position consistency and tie rate (each with its interval), beside its parse
    rate and speed from its score dir's summary.json."""
    pw = report.get("pairwise") or {}
    cards = []
    for j in pw.get("judges", []):
        summary = read_summary(Path(j["origin"]))
        mode = (summary or {}).get("mode") or ("relative" if j["positional"] else "pairwise_absolute")
        cards.append({
            "judge": j["name"],
            "judge_model": j.get("judge_model"),
            "backends": sorted((summary or {}).get("judge_backends") or {}),
            "mode": mode + (", both orders" if j["swapped"] else ""),
            "swapped": j["swapped"],
            "label": pw.get("label"),
            "n": j["n"],
            "labelled": j["labelled"],
            "rows_missing": j["rows_missing"],
            **{k: j["statistics"][k] for k in PAIRWISE_CARD_STATISTICS},
            "summary_json": str(Path(j["origin"]) / "summary.json") if summary is not None else None,
            **{k: (summary or {}).get(k) for k in _SPEED},
        })
    return cards


def _pair(report: dict, a: str, b: str) -> Optional[dict]:
    return next((p for p in report["pairs"] if {p["a"], p["b"]} == {a, b}), None)


