"""report.html of `judgefleet score`: the summary's headline numbers, the score distribution
overall and per `output.group_by` group, errors by reason code, the lowest- and highest-scored
rows with their feedback, throughput and time.

What summary.json lacks for that - the distribution per group and the rows shown - is read from
the shards (one shard at a time, a bounded number of rows kept) and added to summary.json as its
`report` block, so everything the page shows is in summary.json too.
"""

from __future__ import annotations

import heapq
import logging
from collections import Counter, defaultdict
from typing import Any, Dict, List, Optional, Sequence

from jobs.data import storage
from jobs.data.report_page import (bars, counts_of, figures, num, page, pairs_table, pct, raw, section,
                                   stacked_shares, table)
from jobs.data.storage import Location
from jobs.judge.modes import get_mode

log = logging.getLogger(__name__)

ROWS_SHOWN = 5  # lowest- and highest-scored rows each
GROUPS_SHOWN = 30  # per group_by column, the groups with most rows
SAMPLES_SHOWN = 5  # feedbacks per row
FEEDBACK_CHARS = 800
TEXT_CHARS = 300
# Input columns named like an output column are kept as input_<name> (jobs.runtime.pipeline).
_OUTPUT_NAMES = ("score", "scores", "feedbacks", "errors", "prompt", "row_id", "row_index")


def write_report(out_dir: Location, summary: dict, shards: Sequence[Location]) -> Optional[Location]:
    """Add summary["report"] and write out_dir/report.html. A report that cannot be made is a
    warning, never the job's failure: the shards and summary.json are what a score run is for."""
    try:
        summary["report"] = gather(shards, summary)
        path = storage.location(out_dir) / "report.html"
        storage.write_atomic(path, render(summary).encode("utf-8"))
        return path
    except Exception as e:  # noqa: BLE001 - the report must not cost the scores
        log.warning("report.html was not written: %s", e)
        summary.pop("report", None)
        return None


def gather(shards: Sequence[Location], summary: dict) -> dict:
    """From the shards: sample score counts per group, and the lowest- and highest-scored rows."""
    mode = get_mode(summary["mode"])
    groups = list(summary.get("by_group") or {})
    dataset = (summary.get("config") or {}).get("dataset") or {}
    text_field = dataset.get("prompt_field") or dataset.get("instruction_field")
    per_group: Dict[str, Dict[str, Counter]] = {g: defaultdict(Counter) for g in groups}
    extremes = _Extremes(ROWS_SHOWN)
    text_seen = False
    for shard in shards:  # one at a time, only the columns shown: memory stays bounded
        names = storage.read_schema(shard).names
        text_col = _stored(text_field, names)
        text_seen = text_seen or text_col is not None
        wanted = ["row_id", "row_index", "score", "scores", "feedbacks", "errors", *groups, text_col]
        t = storage.read_table(shard, columns=[c for c in dict.fromkeys(wanted) if c and c in names]).to_pydict()
        for g in groups:  # keyed as SummaryBuilder keys by_group
            for value, samples in zip(t.get(g, [None] * len(t["row_id"])), t["scores"]):
                per_group[g][str(value)].update(str(s) for s in samples or [] if s is not None)
        order = t.get("row_index") or range(len(t["row_id"]))
        scored = [(mode.row_value(s), order[i], i) for i, s in enumerate(t["score"]) if s is not None]
        extremes.add(scored, lambda i: _row(t, i, groups, text_col))
    lowest = [r for _, r in extremes.low]
    shown = {r["row_id"] for r in lowest}
    out: Dict[str, Any] = {
        "text_field": text_field if text_seen else None,
        "score_counts_by_group": {},
        "groups_left_out": {},
        "lowest": lowest,
        "highest": [r for _, r in extremes.high if r["row_id"] not in shown],  # few rows: each shown once
    }
    for g in groups:
        by_rows = sorted(summary["by_group"][g].items(), key=lambda kv: -kv[1]["rows"])
        keep = [k for k, _ in by_rows[:GROUPS_SHOWN]]
        # JSON's text keys, in score order: the page reads the same block back from summary.json.
        out["score_counts_by_group"][g] = {k: {str(s): n for s, n in counts_of(per_group[g].get(k, {})).items()}
                                           for k in keep}
        out["groups_left_out"][g] = max(0, len(by_rows) - GROUPS_SHOWN)
    return out


class _Extremes:
    """The k lowest and the k highest rows by (value, input order), over shards seen one at a time."""

    def __init__(self, k: int):
        self.k = k
        self.low: List[tuple] = []  # ((value, order), row)
        self.high: List[tuple] = []  # ((value, -order), row): among equal values, the earlier row first

    def add(self, scored: List[tuple], row_of) -> None:
        """`scored`: (value, order, index in the shard); `row_of(index)` -> the row as shown."""
        self.low += [((v, k), row_of(i)) for v, k, i in heapq.nsmallest(self.k, scored)]
        self.high += [((v, -k), row_of(i)) for v, k, i in heapq.nlargest(self.k, scored, key=lambda x: (x[0], -x[1]))]
        self.low = heapq.nsmallest(self.k, self.low, key=lambda x: x[0])
        self.high = heapq.nlargest(self.k, self.high, key=lambda x: x[0])


def _stored(column: Optional[str], names: Sequence[str]) -> Optional[str]:
    if not column:
        return None
    name = f"input_{column}" if column in _OUTPUT_NAMES else column
    return name if name in names else None


def _row(t: dict, i: int, groups: Sequence[str], text_col: Optional[str]) -> dict:
    """One row as the report shows it, its long text cut."""
    return {
        "row_id": t["row_id"][i],
        "row_index": t["row_index"][i] if "row_index" in t else None,
        "score": t["score"][i],
        "scores": list(t["scores"][i] or []),
        "groups": {g: t[g][i] for g in groups if g in t},
        "text": _cut(t[text_col][i], TEXT_CHARS) if text_col else None,
        "feedbacks": [_cut(f, FEEDBACK_CHARS) for f in ((t["feedbacks"][i] if "feedbacks" in t else None) or [])
                      [:SAMPLES_SHOWN]],
        "errors": list(t["errors"][i] or []) if "errors" in t else [],
    }


def _cut(value: Any, chars: int) -> Optional[str]:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= chars else text[:chars] + " [...]"


# -- the page ----------------------------------------------------------------------------------
def render(summary: dict) -> str:
    mode = get_mode(summary["mode"])
    report = summary.get("report") or {}
    judge = summary.get("judge") or {}
    metric = summary.get(mode.metric)
    label = mode.headline[0]
    headline = pairs_table([
        ("rows", f"{summary['rows']} (scored {summary['scored']}, unscored {summary['unscored']}, "
                 f"{summary['rows_with_errors']} with errors)"),
        ("resumed", f"{summary.get('resumed_rows', 0)} rows from finished shards, {summary.get('rows_this_run')} "
                    "scored in this run"),
        ("samples scored", f"{summary['samples_scored']}/{summary['samples']} (parse rate {pct(summary['parse_rate'])})"),
        (label, (pct(metric) if mode.metric_is_share else num(metric))
         + f" ({mode.expected_metric} {num(summary.get(mode.expected_metric))})"),
        ("judge", f"{judge.get('model')} ({judge.get('mode')}) via {', '.join(summary.get('judge_backends') or {}) or '-'}"
                  f" at {judge.get('url')}"),
        ("members", ", ".join(f"{k}: {v} rows" for k, v in (summary.get("judge_members") or {}).items()) or "-"),
        ("dataset", summary.get("dataset")),
        ("output", f"{summary.get('output_dir')} ({summary.get('shards')} shards)"),
    ])
    sections = [section("Headline", headline), _distribution(summary), *_groups(summary, report, mode),
                _errors(summary)]
    for key, title in (("lowest", "Lowest-scored rows"), ("highest", "Highest-scored rows")):
        if report.get(key):
            sections.append(section(title, _rows_table(report[key], report.get("text_field"))))
    sections.append(_speed(summary))
    subtitle = f"{summary['rows']} rows of {summary.get('dataset')} judged by {judge.get('model')} ({mode.name})"
    return page("judgefleet score", subtitle, sections)


def _distribution(summary: dict) -> raw:
    counts = counts_of(summary.get("sample_score_counts") or {})
    total = sum(counts.values()) or 1
    return section("Scores", "Every scored sample's score, over all rows.",
                   table(["score", "samples", "share"], [[k, v, pct(v / total)] for k, v in counts.items()],
                         numeric=(1, 2)),
                   figures(bars({"all rows": counts}, "sample scores")))


def _groups(summary: dict, report: dict, mode) -> List[raw]:
    out = []
    for g, groups in (report.get("score_counts_by_group") or {}).items():
        keys = list(counts_of({k: 0 for c in groups.values() for k in c}))
        stats = summary["by_group"][g]
        rows = [[k, stats[k]["rows"], stats[k]["scored"], num(stats[k].get(mode.metric)),
                 *(c.get(str(s), 0) for s in keys)] for k, c in groups.items()]
        left = report["groups_left_out"].get(g)
        parts = [f"{left} smaller groups are left out." if left else "",
                 table([g, "rows", "scored", mode.metric.replace("_", " "), *(f"score {s}" for s in keys)], rows,
                       numeric=range(1, 4 + len(keys)))]
        shares = {k: {s: c.get(str(s), 0) for s in keys} for k, c in groups.items()}
        parts.append(figures(stacked_shares(shares, f"sample scores by {g}")))
        out.append(section(f"By {g}", *[p for p in parts if p]))
    return out


def _errors(summary: dict) -> raw:
    reasons = summary.get("errors_by_reason") or {}
    if not reasons:
        return section("Errors", "No row ended with an error.")
    return section("Errors", table(["reason", "errors"], list(reasons.items()), numeric=(1,)),
                   "Most frequent messages:",
                   table(["count", "reason", "error"],
                         [[e["count"], e.get("reason"), e["error"]] for e in summary.get("top_errors") or []],
                         numeric=(0,), text=(2,)))


def _rows_table(rows: List[dict], text_field: Optional[str]) -> raw:
    body = [[r["row_id"], r["score"], ", ".join(f"{k}={v}" for k, v in r["groups"].items()) or "-", r["text"],
             _feedback(r), "; ".join(r["errors"]) or "-"] for r in rows]
    return table(["row_id", "score", "groups", text_field or "input", "feedback", "errors"], body, numeric=(1,),
                 text=(3, 4, 5))


def _feedback(row: dict) -> str:
    parts = []
    for n, text in enumerate(row["feedbacks"]):
        score = row["scores"][n] if n < len(row["scores"]) else None
        if text:
            parts.append(f"sample {n + 1}, " + ("unscored" if score is None else f"score {score}") + f": {text}")
    return "\n\n".join(parts) or "-"


def _speed(summary: dict) -> raw:
    return section("Throughput and time", pairs_table([
        ("scoring", f"{num(summary.get('wall_time_s'), 1)} s"),
        ("in all", f"{num(summary.get('total_time_s'), 1)} s (with starting Ray and the judge route)"),
        ("rows/s", num(summary.get("rows_per_s"))),
        ("samples/s", num(summary.get("samples_per_s"))),
        ("tokens/s", f"{num(summary.get('tokens_per_s'), 1)} (prompt {num(summary.get('prompt_tokens_per_s'), 1)}, "
                     f"completion {num(summary.get('completion_tokens_per_s'), 1)})"),
        ("tokens", f"prompt {summary.get('prompt_tokens')}, completion {summary.get('completion_tokens')}"),
    ]))
