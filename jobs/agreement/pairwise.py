"""Pairwise judges (A/B verdicts) against a label: accuracy, position bias, ties, length bias.

A pairwise source is a score dir of relative mode (with or without `judge.swap`) or of
`pairwise_absolute`. For each, against `--label COLUMN` (A or B: which response is better; a
`pairwise_absolute` dir without one is labelled "A", its chosen response), with a 95% interval
from the same paired (cluster) bootstrap as the other statistics (`stats.bootstrap`):

- accuracy: the share of rows whose verdict is the label, a tie counted wrong; and without ties
  (over rows with a verdict);
- position consistency: the share of rows whose two orders name the same response (swap only);
- first-position preference: the share of order verdicts (each order's majority) that name the
  response shown first - A in the (A, B) order, B in the (B, A) order - over both orders;
- tie rate: the share of rows with no verdict (an inconsistent pair, a split vote);
- P(prefers the longer response): over rows with a verdict whose responses differ in length.

A row the judge did not answer at all (no scored sample) is left out and counted. Two judges on
the same pairs are compared with an exact McNemar test (a binomial test on the discordant
pairs, scipy.stats.binomtest) and the paired interval of their accuracy difference.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow.parquet as pq

from jobs.agreement.sources import _holder, _parse_spec, _read_data_file, _Input
from jobs.agreement.stats import bootstrap, rng_for, units_of
from jobs.errors import ConfigError, DatasetError
from jobs.judge.modes import get_mode

PAIRWISE_STATISTICS = ("accuracy", "accuracy_without_ties", "position_consistency", "first_position_preference",
                       "tie_rate", "prefers_longer")
_COLUMNS = ("row_id", "score", "scores", "score_ab", "score_ba", "scores_swapped", "scores_b", "judge_model")
# The response columns a mode shows (fingerprint keys), for P(prefers the longer response).
_RESPONSES = {True: ("dataset.response_a_field", "dataset.response_b_field"),
              False: ("dataset.chosen_field", "dataset.rejected_field")}


def is_pairwise_dir(path: Path) -> bool:
    """A score dir whose `score` holds A/B verdicts."""
    import pyarrow as pa

    shards = sorted((path / "scores").glob("part-*.parquet")) if path.is_dir() else []
    if not shards:
        return False
    schema = pq.read_schema(shards[0])
    return "score" in schema.names and pa.types.is_string(schema.field("score").type)


@dataclass
class PairSource:
    """One pairwise judge: per row its verdict and what the statistics need."""

    name: str
    origin: str
    judge_model: Optional[str]
    positional: bool  # A/B name positions (relative mode): position statistics apply
    swapped: bool  # both orders were judged
    rows: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # row_id -> its columns

    def describe(self) -> dict:
        answered = sum(_answered(r) for r in self.rows.values())
        return {"name": self.name, "origin": self.origin, "judge_model": self.judge_model, "rows": len(self.rows),
                "answered": answered, "positional": self.positional, "swapped": self.swapped}


def load_pairwise(specs: Sequence[str], label: Optional[str], group: Optional[str], id_field: Optional[str]):
    """The pairwise score dirs among `specs`, with label, group and response lengths per row."""
    parsed = [_parse_spec(s) for s in specs]
    dirs = [(n, p) for n, p, is_dir in parsed if is_dir and is_pairwise_dir(p)]
    files = [_read_data_file(n, p, [c for c in (label, group) if c], id_field) for n, p, is_dir in parsed if not is_dir]
    sources = [_read_pair_dir(n, p, [c for c in (label, group) if c]) for n, p in dirs]
    for column, option in ((label, "--label"), (group, "--group")):
        if column and not any(column in s.rows[next(iter(s.rows))] for s in sources if s.rows):
            holder = _holder(files, column, option) if files else None
            if holder is None:
                raise ConfigError(f"{option} '{column}': no pairwise score dir or data file has a column '{column}'; "
                                  "name an input column, or add the data file as a SOURCE")
            for s in sources:
                for rid, row in s.rows.items():
                    row[column] = holder.rows.get(rid, {}).get(holder.stored(column))
    return sources


def _read_pair_dir(name: str, path: Path, wanted: List[str]) -> PairSource:
    try:
        fingerprint = json.loads((path / "job.json").read_text()).get("fingerprint", {})
    except (OSError, ValueError):
        fingerprint = {}
    shards = [p for p in sorted((path / "scores").glob("part-*.parquet"))
              if p.with_name(p.name.replace(".parquet", ".manifest.json")).is_file()]
    if not shards:
        raise DatasetError(f"score dir '{path}' has no finished shard; let `judgefleet score` finish, or run it again")
    columns = list(pq.read_schema(shards[0]).names)
    mode = fingerprint.get("judge.mode")
    positional = get_mode(mode).positional if mode else "score_a" not in columns
    probe = _Input(name, path, True, columns, {})
    responses = [fingerprint.get(k) or k.split(".")[1].replace("_field", "") for k in _RESPONSES[positional]]
    if fingerprint.get("dataset.prompt_field"):
        responses = []  # whole prompts: the responses are not columns
    stored = {c: probe.stored(c) for c in [*wanted, *responses]}
    keep = [c for c in _COLUMNS if c in columns] + [s for s in stored.values() if s]
    source = PairSource(name, str(path), None, positional, "score_ab" in columns)
    for shard in shards:
        for row in pq.read_table(shard, columns=list(dict.fromkeys(keep))).to_pylist():
            out = {k: row.get(k) for k in _COLUMNS if k in row}
            for c, s in stored.items():
                if s:
                    out[c] = row.get(s)
            if len(responses) == 2:
                out["_lengths"] = tuple(len(v) if isinstance(v, str) else None for v in (out.get(responses[0]),
                                                                                          out.get(responses[1])))
            source.rows[out.pop("row_id")] = out
    models = [r.get("judge_model") for r in source.rows.values() if r.get("judge_model")]
    source.judge_model = max(set(models), key=models.count) if models else None
    return source


# -- per-row indicators ----------------------------------------------------------------------
def _answered(row: dict) -> bool:
    return any(x is not None for k in ("scores", "scores_swapped", "scores_b") for x in row.get(k) or [])


def _label(value: Any) -> Optional[str]:
    text = str(value).strip().upper() if value is not None else ""
    return text if text in ("A", "B") else None


@dataclass
class _Rows:
    """Per-row indicator arrays of one source (NaN where a statistic does not apply to the row)."""

    ids: List[str]
    correct: np.ndarray  # verdict == label, a tie counted wrong
    correct_decided: np.ndarray  # verdict == label, over rows with a verdict
    consistent: np.ndarray
    first_hits: np.ndarray  # order verdicts naming the response shown first
    first_n: np.ndarray  # order verdicts
    tie: np.ndarray
    longer: np.ndarray


def _indicators(s: PairSource, ids: List[str], label: Optional[str]) -> _Rows:
    n = len(ids)
    arr = {k: np.full(n, np.nan) for k in ("correct", "correct_decided", "consistent", "tie", "longer")}
    first_hits, first_n = np.zeros(n), np.zeros(n)
    for i, rid in enumerate(ids):
        row = s.rows.get(rid)
        if row is None or not _answered(row):
            continue
        verdict = row.get("score")
        truth = _label(row.get(label)) if label else ("A" if not s.positional else None)
        arr["tie"][i] = verdict is None
        if truth:
            arr["correct"][i] = verdict == truth
            if verdict is not None:
                arr["correct_decided"][i] = verdict == truth
        if s.swapped:
            ab, ba = row.get("score_ab"), row.get("score_ba")
            if ab is not None and ba is not None:
                arr["consistent"][i] = ab == ba
            orders = [(ab, "A"), (ba, "B")]  # (verdict in original labels, the response shown first)
        else:
            orders = [(verdict, "A")]
        if s.positional:
            got = [(v, first) for v, first in orders if v is not None]
            first_hits[i], first_n[i] = sum(v == first for v, first in got), len(got)
        la, lb = row.get("_lengths") or (None, None)
        if verdict is not None and la is not None and lb is not None and la != lb:
            arr["longer"][i] = verdict == ("A" if la > lb else "B")
    return _Rows(ids, arr["correct"], arr["correct_decided"], arr["consistent"], first_hits, first_n, arr["tie"],
                 arr["longer"])


def _mean(values: np.ndarray) -> float:
    got = values[np.isfinite(values)]
    return float(np.mean(got)) if len(got) else float("nan")


def pairwise_statistics(r: _Rows, rows: np.ndarray, positional: bool) -> np.ndarray:
    """Every statistic of PAIRWISE_STATISTICS, in that order, over `rows`."""
    hits, n = float(np.sum(r.first_hits[rows])), float(np.sum(r.first_n[rows]))
    return np.array([
        _mean(r.correct[rows]),
        _mean(r.correct_decided[rows]),
        _mean(r.consistent[rows]),
        hits / n if positional and n else float("nan"),
        _mean(r.tie[rows]),
        _mean(r.longer[rows]),
    ])


# -- the comparisons ---------------------------------------------------------------------------
def compare_pairwise(sources: Sequence[PairSource], label: Optional[str], group: Optional[str], resamples: int,
                     seed: int) -> dict:
    """Each pairwise judge's statistics with intervals, and McNemar between each two of them."""
    ids = list(dict.fromkeys(rid for s in sources for rid in s.rows))
    groups = None
    if group:
        values = {}
        for s in sources:
            for rid, row in s.rows.items():
                if row.get(group) is not None:
                    values.setdefault(rid, json.dumps(row[group], sort_keys=True, default=str))
        groups = np.array([values.get(rid, f"\0row:{rid}") for rid in ids], dtype=object)
    indicators = {s.name: _indicators(s, ids, label) for s in sources}
    judges = []
    for s in sources:
        r = indicators[s.name]
        answered = np.flatnonzero(np.isfinite(r.tie))
        intervals = bootstrap(lambda rows, r=r, s=s: pairwise_statistics(r, rows, s.positional),
                              units_of(answered, groups), resamples, rng_for(seed, f"pairwise:{s.name}"))
        judges.append({**s.describe(), "n": int(len(answered)), "rows_missing": len(ids) - int(len(answered)),
                       "labelled": int(np.sum(np.isfinite(r.correct))),
                       "statistics": {k: i.to_dict() for k, i in zip(PAIRWISE_STATISTICS, intervals)}})
    tests = [mcnemar(indicators[a.name], indicators[b.name], a.name, b.name, groups, resamples, seed)
             for a, b in combinations(sources, 2)]
    return {"label": label, "rows": len(ids), "judges": judges, "mcnemar": [t for t in tests if t]}


def mcnemar(ra: _Rows, rb: _Rows, a: str, b: str, groups, resamples: int, seed: int) -> Optional[dict]:
    """Exact McNemar test of two judges' accuracy (ties wrong) on the pairs both judged and labelled."""
    import scipy.stats

    rows = np.flatnonzero(np.isfinite(ra.correct) & np.isfinite(rb.correct))
    if not len(rows):
        return None
    x, y = ra.correct[rows].astype(bool), rb.correct[rows].astype(bool)
    only_a, only_b = int(np.sum(x & ~y)), int(np.sum(~x & y))
    p = float(scipy.stats.binomtest(only_a, only_a + only_b, 0.5).pvalue) if only_a + only_b else 1.0
    (diff,) = bootstrap(lambda r: np.array([_mean(ra.correct[r]) - _mean(rb.correct[r])]), units_of(rows, groups),
                        resamples, rng_for(seed, f"mcnemar:{a}|{b}"))
    if p < 0.05:
        verdict = f"{a if only_a > only_b else b} is more accurate (p = {p:.3g})"
    else:
        verdict = f"the data cannot tell (p = {p:.3g})"
    return {"a": a, "b": b, "n": int(len(rows)), "accuracy_a": float(np.mean(x)), "accuracy_b": float(np.mean(y)),
            "only_a_right": only_a, "only_b_right": only_b, "p_value": p, "difference": diff.to_dict(),
            "verdict": verdict}
