"""Running totals over scored rows -> summary.json and the terminal table.

What a score means in the totals (a mean score, A's win rate) is the mode's arithmetic
(`jobs.judge.modes`); errors are counted by message and by reason code.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import pyarrow as pa

from jobs.data import storage
from jobs.judge.modes import Mode, get_mode
from jobs.judge.reasons import Reason

_COLUMNS = ("score", "scores", "score_expected", "errors", "error_reasons", "prompt_tokens", "completion_tokens",
            "judge_backend", "judge_member", "judge_model_file", "judge_model_sha256", "consistent",
            "scores_swapped", "scores_b")  # the last three: modes of two prompts a row


class SummaryBuilder:
    def __init__(self, mode: Union[str, Mode], group_by: Sequence[str] = ()):
        self.mode = get_mode(mode)
        self.group_by = list(group_by)
        self.rows = self.scored = 0
        self.samples = self.samples_scored = 0
        self.score_sum = 0.0
        self.expected_sum, self.expected_n = 0.0, 0
        self.sample_counts: Counter = Counter()
        self.prompt_tokens = self.completion_tokens = 0
        self.errors: Counter = Counter()  # message -> count
        self.error_reasons: Counter = Counter()  # reason code -> count
        self.reason_of: Dict[str, str] = {}  # message -> its reason code
        self.rows_with_errors = 0
        self.backends: Counter = Counter()
        self.members: Counter = Counter()
        self.model_sha256: Counter = Counter()
        # (member, backend, model file, sha256) -> rows: which weights answered, for lineage.
        self.judges: Counter = Counter()
        # Counts at the start of this run; rates count only what this run scored.
        self._before = (0, 0, 0, 0)
        self.consistent = Counter()  # relative mode in both orders: rows whose orders agree (True) or not
        self.groups: Dict[str, Dict[Any, List[float]]] = {g: defaultdict(lambda: [0, 0, 0.0]) for g in self.group_by}
        self.missing_groups: set = set()

    def add(self, table: pa.Table) -> None:
        cols = table.select([c for c in _COLUMNS if c in table.column_names]).to_pydict()
        # Shards written before reason codes existed have no error_reasons: their reasons are unknown.
        reasons = cols.get("error_reasons") or [None] * table.num_rows
        group_cols = {}
        for g in self.group_by:
            if g in table.column_names:
                group_cols[g] = table.column(g).to_pylist()
            else:
                self.missing_groups.add(g)
        self.consistent.update(c for c in cols.get("consistent") or [] if c is not None)
        for i in range(table.num_rows):
            score, samples = cols["score"][i], cols["scores"][i] or []
            for other in ("scores_swapped", "scores_b"):  # the row's second prompt's samples count too
                samples = samples + ((cols.get(other) or [None] * table.num_rows)[i] or [])
            self.rows += 1
            self.samples += len(samples)
            got = [s for s in samples if s is not None]
            self.samples_scored += len(got)
            self.sample_counts.update(str(s) for s in got)
            if score is not None:
                self.scored += 1
                self.score_sum += self.mode.row_value(score)
            if cols["score_expected"][i] is not None:
                self.expected_sum += cols["score_expected"][i]
                self.expected_n += 1
            if cols["errors"][i]:
                self.rows_with_errors += 1
                self._add_errors(cols["errors"][i], reasons[i])
            self.prompt_tokens += cols["prompt_tokens"][i] or 0
            self.completion_tokens += cols["completion_tokens"][i] or 0
            backend, member, sha = cols["judge_backend"][i], cols["judge_member"][i], cols["judge_model_sha256"][i]
            if backend:
                self.backends[backend] += 1
                self.judges[(member, backend, cols["judge_model_file"][i], sha)] += 1
            if member:
                self.members[member] += 1
            if sha:
                self.model_sha256[sha] += 1
            for g, values in group_cols.items():
                key = values[i] if isinstance(values[i], (str, int, float, bool)) or values[i] is None else str(values[i])
                acc = self.groups[g][key]
                acc[0] += 1
                if score is not None:
                    acc[1] += 1
                    acc[2] += self.mode.row_value(score)

    def _add_errors(self, messages: List[str], codes: Optional[List[str]]) -> None:
        codes = codes if codes and len(codes) == len(messages) else [Reason.UNKNOWN.value] * len(messages)
        self.errors.update(messages)
        self.error_reasons.update(codes)
        for message, code in zip(messages, codes):
            if self.reason_of.get(message, Reason.UNKNOWN.value) == Reason.UNKNOWN.value:
                self.reason_of[message] = code

    @property
    def columns(self) -> List[str]:
        """The columns `add` reads: a caller may load only these."""
        return [*_COLUMNS, *self.group_by]

    def mark_resumed(self) -> None:
        """What was added so far came from an earlier run: keep it in the totals, not in the rates."""
        self._before = (self.rows, self.samples_scored, self.prompt_tokens, self.completion_tokens)

    def result(self, wall_time_s: float, extra: Optional[dict] = None) -> dict:
        wall = max(wall_time_s, 1e-9)
        rows0, samples0, prompt0, completion0 = self._before
        rows, samples = self.rows - rows0, self.samples_scored - samples0
        prompt, completion = self.prompt_tokens - prompt0, self.completion_tokens - completion0
        out: Dict[str, Any] = {
            "rows": self.rows,
            "scored": self.scored,
            "unscored": self.rows - self.scored,
            "rows_with_errors": self.rows_with_errors,
            "samples": self.samples,
            "samples_scored": self.samples_scored,
            "parse_rate": _ratio(self.samples_scored, self.samples),
            "mode": self.mode.name,
            self.mode.metric: _ratio(self.score_sum, self.scored),
            **({"position_consistency": _ratio(self.consistent[True], sum(self.consistent.values()))}
               if self.consistent else {}),
            self.mode.expected_metric: _ratio(self.expected_sum, self.expected_n),
        }
        out["sample_score_counts"] = dict(sorted(self.sample_counts.items()))
        out["by_group"] = {
            g: {
                str(k): {"rows": v[0], "scored": v[1], self.mode.metric: _ratio(v[2], v[1])}
                for k, v in sorted(groups.items(), key=lambda kv: str(kv[0]))
            }
            for g, groups in self.groups.items()
            if g not in self.missing_groups
        }
        if self.missing_groups:
            out["missing_group_columns"] = sorted(self.missing_groups)
        out.update(
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            resumed_rows=rows0,
            rows_this_run=rows,
            wall_time_s=round(wall_time_s, 3),
            rows_per_s=round(rows / wall, 4),
            samples_per_s=round(samples / wall, 4),
            prompt_tokens_per_s=round(prompt / wall, 2),
            completion_tokens_per_s=round(completion / wall, 2),
            tokens_per_s=round((prompt + completion) / wall, 2),
            judge_backends=dict(self.backends),
            judge_members=dict(self.members),
            judge_model_sha256=dict(self.model_sha256),
            errors_by_reason=dict(self.error_reasons.most_common()),
            top_errors=[{"error": e, "count": n, "reason": self.reason_of[e]} for e, n in self.errors.most_common(10)],
        )
        out.update(extra or {})
        return out


def read_summary(out_dir: Union[str, Path]) -> Optional[dict]:
    """A score dir's summary.json, or None where there is none readable (a run not finished)."""
    path = storage.location(out_dir) / "summary.json"
    try:
        data = storage.read_json(path)
    except (OSError, ValueError) as e:
        logging.getLogger(__name__).info("no readable summary.json in %s (%s)", out_dir, e)
        return None
    return data if isinstance(data, dict) else None


def _ratio(num: float, den: float) -> Optional[float]:
    return round(num / den, 4) if den else None


def print_summary(summary: dict, console=None) -> None:
    """The terminal table: what was scored, how well it parsed, how fast."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title="judgefleet score", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("rows", f"{summary['rows']}  (scored {summary['scored']}, unscored {summary['unscored']})")
    if summary.get("resumed_rows"):
        table.add_row("resumed", f"{summary['resumed_rows']} rows from finished shards, {summary['rows_this_run']} scored now")
    table.add_row("samples scored", f"{summary['samples_scored']}/{summary['samples']}  (parse rate {_pct(summary['parse_rate'])})")
    mode = get_mode(summary["mode"])
    label, text = mode.headline
    metric = summary[mode.metric]
    table.add_row(label, text.format(metric=_pct(metric) if mode.metric_is_share else _num(metric),
                                     expected=_num(summary[mode.expected_metric])))
    if summary.get("position_consistency") is not None:
        table.add_row("position consistency", f"{_pct(summary['position_consistency'])} of rows judged in both orders")
    table.add_row("sample scores", ", ".join(f"{k}: {v}" for k, v in summary["sample_score_counts"].items()) or "-")
    for g, groups in summary["by_group"].items():
        table.add_row(f"by {g}", "  ".join(f"{k}: {_num(v[mode.metric])} ({v['scored']}/{v['rows']})" for k, v in groups.items()))
    table.add_row("tokens", f"prompt {summary['prompt_tokens']}, completion {summary['completion_tokens']}")
    table.add_row(
        "throughput",
        f"{summary['rows_per_s']:.3f} rows/s, {summary['samples_per_s']:.3f} samples/s, "
        f"{summary['completion_tokens_per_s']:.1f} completion tokens/s",
    )
    table.add_row(
        "time",
        f"{summary['wall_time_s']:.1f} s scoring"
        + (f", {summary['total_time_s']:.1f} s in all" if summary.get("total_time_s") else ""),
    )
    if summary.get("judge"):
        j = summary["judge"]
        where = f"at {j['url']}" if j.get("url") else "(not started: nothing left to score)"
        table.add_row("judge", f"{j.get('model')} via {', '.join(summary['judge_backends']) or '-'} {where}")
        if len(summary.get("judge_members") or {}) > 1:
            table.add_row("members", ", ".join(f"{k}: {v} rows" for k, v in summary["judge_members"].items()))
    if summary.get("errors_by_reason"):
        table.add_row("errors by reason", ", ".join(f"{k}: {v}" for k, v in summary["errors_by_reason"].items()))
    for err in summary["top_errors"][:3]:
        table.add_row("error", f"{err['count']}x {err.get('reason', Reason.UNKNOWN.value)}: {err['error'][:160]}")
    if summary.get("output_dir"):
        table.add_row("output", f"{summary['output_dir']}/scores ({summary.get('shards', 0)} shards), summary.json")
    console.print(table)


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.3f}"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
