"""Every comparison `judgefleet agree` reports, from the joined table: each pair of sources, two
judges against each reference, and each judge's agreement with itself.

A row where one side has no score is left out of that comparison and counted, never scored.
"""

from __future__ import annotations

from itertools import combinations
from typing import List, Optional

import numpy as np

from jobs.agreement.sources import JUDGE, REFERENCE, Joined, Source
from jobs.agreement.stats import (PAIR_STATISTICS, Interval, bootstrap, confusion, krippendorff_alpha, labels_of,
                                  pair_statistics, pearson, rng_for, units_of)


def compare(joined: Joined, resamples: int, seed: int) -> dict:
    """The whole analysis as plain data (every number agreement.json holds, less the settings)."""
    pairs = [compare_pair(joined, a.name, b.name, resamples, seed) for a, b in combinations(joined.sources, 2)]
    judges = [s.name for s in joined.sources if s.kind == JUDGE]
    versus = [versus_reference(joined, ref.name, a, b, resamples, seed)
              for ref in joined.sources if ref.kind == REFERENCE for a, b in combinations(judges, 2)]
    return {
        "sources": [s.describe() for s in joined.sources],
        "rows": len(joined.row_ids),
        "clusters": None if joined.groups is None else len(set(joined.groups)),
        "pairs": pairs,
        "versus_reference": versus,
        "self_consistency": {
            "samples": [samples_alpha(joined, s, resamples, seed) for s in joined.sources if s.name in joined.samples],
            "run_to_run": run_to_run(joined, pairs),
        },
        "notes": list(joined.notes),
    }


def complete_rows(joined: Joined, names: List[str]):
    """Rows where every named source has a score, and how many rows of theirs are left out."""
    scored = np.logical_and.reduce([np.isfinite(joined.scores[n]) for n in names])
    universe = np.logical_or.reduce([joined.present[n] for n in names])
    missing_by = {n: int(np.sum(universe & ~np.isfinite(joined.scores[n]))) for n in names}
    return np.flatnonzero(scored), int(np.sum(universe & ~scored)), missing_by


def compare_pair(joined: Joined, a: str, b: str, resamples: int, seed: int) -> dict:
    x, y = joined.scores[a], joined.scores[b]
    rows, missing, missing_by = complete_rows(joined, [a, b])
    labels = labels_of(x[rows], y[rows])
    domain = np.unique(np.concatenate([x[rows], y[rows]]))
    units = units_of(rows, joined.groups)
    intervals = bootstrap(lambda r: pair_statistics(x[r], y[r], labels, domain), units, resamples,
                          rng_for(seed, f"pair:{a}|{b}"))
    return {
        "a": a, "b": b, "n": int(len(rows)), "clusters": None if joined.groups is None else len(units),
        "rows_missing": missing, "rows_missing_by_source": missing_by,
        "part_whole": _part_whole(joined.source(a), joined.source(b)),
        "statistics": {name: i.to_dict() for name, i in zip(PAIR_STATISTICS, intervals)},
        "confusion": {"rows": a, "columns": b, "labels": labels, "matrix": confusion(x[rows], y[rows], labels)},
    }


def versus_reference(joined: Joined, ref: str, a: str, b: str, resamples: int, seed: int) -> dict:
    """Which of two judges correlates more with a reference: r(a, ref) - r(b, ref) on the same rows,
    with one paired bootstrap for both correlations."""
    x, y, z = joined.scores[a], joined.scores[b], joined.scores[ref]
    rows, missing, missing_by = complete_rows(joined, [a, b, ref])

    def statistic(r):
        ra, rb = pearson(x[r], z[r]), pearson(y[r], z[r])
        return np.array([ra, rb, ra - rb])

    ra, rb, diff = bootstrap(statistic, units_of(rows, joined.groups), resamples, rng_for(seed, f"versus:{ref}|{a}|{b}"))
    return {
        "reference": ref, "a": a, "b": b, "n": int(len(rows)), "rows_missing": missing,
        "rows_missing_by_source": missing_by,
        "pearson_a": ra.to_dict(), "pearson_b": rb.to_dict(), "difference": diff.to_dict(),
        "verdict": verdict(diff, a, b, ref),
    }


def verdict(diff: Interval, a: str, b: str, ref: str) -> str:
    """Plain words: the interval of r(a) - r(b) says which agrees more, or that the data cannot tell."""
    if diff.estimate is None or diff.low is None:
        return "the data cannot tell (no interval)"
    if not diff.excludes_zero():
        return "the data cannot tell"
    return f"{a if diff.low > 0 else b} agrees more with {ref}"


def samples_alpha(joined: Joined, source: Source, resamples: int, seed: int) -> dict:
    """Ordinal Krippendorff's alpha of a source with itself: rows are units, samples (or runs) raters."""
    mat = joined.samples[source.name]
    rows = np.flatnonzero(np.sum(np.isfinite(mat), axis=1) >= 2)  # a row with one value pairs with nothing
    domain = np.unique(mat[np.isfinite(mat)])
    units = units_of(rows, joined.groups)
    (alpha,) = bootstrap(lambda r: np.array([krippendorff_alpha(mat[r].T, domain)]), units, resamples,
                         rng_for(seed, f"samples:{source.name}"))
    return {"source": source.name, "kind": source.kind, "samples_per_row": int(mat.shape[1]), "n": int(len(rows)),
            "rows_left_out": int(np.sum(np.any(np.isfinite(mat), axis=1))) - int(len(rows)),
            "krippendorff_alpha": alpha.to_dict()}


def run_to_run(joined: Joined, pairs: List[dict]) -> List[dict]:
    """Pearson between two runs of one judge (the article's "PCC (orig)"): two score dirs with the
    same judge_model, or two runs of one reference column."""
    out = []
    for p in pairs:
        sa, sb = joined.source(p["a"]), joined.source(p["b"])
        same: Optional[str] = None
        if sa.kind == sb.kind == JUDGE and sa.judge_model and sa.judge_model == sb.judge_model:
            same = sa.judge_model
        elif sa.parent and sa.parent == sb.parent:
            same = f"{sa.parent} (reference runs)"
        if same:
            out.append({"a": p["a"], "b": p["b"], "judge": same, "n": p["n"], "pearson": p["statistics"]["pearson"]})
    return out


def _part_whole(a: Source, b: Source) -> bool:
    """One is the mean of runs that include the other: their agreement is inflated by construction."""
    return a.parent == b.name or b.parent == a.name

