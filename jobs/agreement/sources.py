"""SOURCE arguments -> one table of scores joined on `row_id`.

A SOURCE is a finished `judgefleet score` output dir (its judge's `score` and per-sample
`scores`) or a dataset file. A dataset file is read with the same `RowStream` that `score` reads
it with, so its `row_id`s are the ones the score dirs made from it hold, and its reference columns
join with them. `--ref COLUMN` and `--group COLUMN` are read from the first SOURCE that has them:
score shards keep every input column (one named like an output column as `input_<name>`).

Nothing here turns a missing value into a score: an empty, NaN or unreadable value is `None` for
that row, and the row stays present, so the comparisons can count it as left out.
"""

from __future__ import annotations

import ast
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs.data.datasource import FORMATS, READ_ERROR, ROW_ID, RowStream, check_readable
from jobs.errors import ConfigError, DatasetError
from jobs.runtime.pipeline import RESULT_COLUMNS

log = logging.getLogger(__name__)

JUDGE, REFERENCE, REFERENCE_RUN = "judge", "reference", "reference run"
_SCORE_FIELDS = ("score", "scores", "judge_model")
_HINT = "give a `judgefleet score` output dir (with scores/part-*.parquet) or a .json, .jsonl, .csv or .parquet data file"


@dataclass
class Source:
    """One column of scores to compare: a judge's scores, a reference column, or one run of it."""

    name: str
    kind: str  # JUDGE, REFERENCE or REFERENCE_RUN
    origin: str  # where it was read
    values: Dict[str, Optional[float]]  # row_id -> score; None: the row is there but has no score
    samples: Optional[Dict[str, List[Optional[float]]]] = None  # row_id -> its samples (judge) or runs (reference)
    judge_model: Optional[str] = None
    unreadable: int = 0  # values present but not readable as a score
    parent: Optional[str] = None  # a reference run: the reference (mean) it is part of

    def describe(self) -> dict:
        scored = sum(v is not None for v in self.values.values())
        out = {"name": self.name, "kind": self.kind, "origin": self.origin, "rows": len(self.values),
               "scored": scored, "unreadable": self.unreadable}
        if self.judge_model:
            out["judge_model"] = self.judge_model
        if self.parent:
            out["part_of"] = self.parent
        return out


@dataclass
class Joined:
    """Every source's scores on one row order: NaN where a row has no score or is not in a source."""

    row_ids: List[str]
    sources: List[Source]
    scores: Dict[str, np.ndarray]  # name -> float array
    present: Dict[str, np.ndarray]  # name -> bool array: the row is in that source (scored or not)
    samples: Dict[str, np.ndarray]  # name -> (rows, k) float array of samples or runs, NaN where none
    groups: Optional[np.ndarray] = None  # cluster key per row (object), when --group is given
    notes: List[str] = field(default_factory=list)

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)


@dataclass
class _Input:
    """One SOURCE argument as read: its rows (row_id -> the columns wanted from it)."""

    name: str
    path: Path
    score_dir: bool
    columns: List[str]
    rows: Dict[str, Dict[str, Any]]
    id_field: Optional[str] = None  # a score dir's dataset.id_field, from its job.json ("" unknown)
    skipped: int = 0  # unreadable rows of a data file

    def stored(self, column: str) -> Optional[str]:
        """The name `column` has here: an input column named like an output one is `input_<name>`."""
        name = f"input_{column}" if column in RESULT_COLUMNS else column
        return name if name in self.columns else None


def load(specs: Sequence[str], refs: Sequence[str] = (), group: Optional[str] = None,
         id_field: Optional[str] = None) -> Joined:
    """Read every SOURCE, build the judge and reference sources, and join them on row_id."""
    refs = list(dict.fromkeys(refs))
    wanted = list(dict.fromkeys([*refs, *([group] if group else [])]))
    paths = [_parse_spec(s) for s in specs]
    id_field = _id_field(paths, id_field)
    inputs = [_read(name, path, is_dir, wanted, id_field) for name, path, is_dir in paths]
    sources: List[Source] = [_judge(i) for i in inputs if i.score_dir]
    used = set()
    for column in refs:
        holder = _holder(inputs, column, "--ref")
        used.add(holder.name)
        sources.extend(_references(holder, column))
    names = Counter(s.name for s in sources)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise ConfigError(f"two sources are named '{twice[0]}'; name them apart with NAME=PATH, e.g. {twice[0]}-2={paths[-1][1]}")
    if len(sources) < 2:
        found = ", ".join(s.name for s in sources) or "none"
        raise ConfigError(f"agree needs at least two sources to compare, found {len(sources)} ({found}); "
                          "add another score dir, or a reference column with --ref COLUMN")
    joined = _join(inputs, sources)
    if group:
        holder = _holder(inputs, group, "--group")
        used.add(holder.name)
        joined.groups = _groups(joined.row_ids, holder, group)
    for i in inputs:
        if not i.score_dir and i.name not in used:
            joined.notes.append(f"data file '{i.name}' was read but no --ref or --group column was taken from it")
        if i.skipped:
            joined.notes.append(f"data file '{i.name}': {i.skipped} unreadable rows left out")
    return joined


# -- reading ------------------------------------------------------------------------------
def _parse_spec(spec: str):
    """'NAME=PATH' or 'PATH' -> (name, path, is a score dir); DatasetError if it is neither kind."""
    name, raw = None, spec
    if "=" in spec and not Path(spec).expanduser().exists():
        name, raw = spec.split("=", 1)
        if not name:
            raise ConfigError(f"SOURCE '{spec}' has an empty name; write NAME=PATH")
    path = Path(raw).expanduser()
    if not path.exists():
        raise DatasetError(f"SOURCE '{raw}' does not exist; {_HINT}")
    if path.is_dir():
        if not any((path / "scores").glob("part-*.parquet")):
            raise DatasetError(f"SOURCE '{raw}' is a directory without scored shards (scores/part-*.parquet); "
                               "give the output.dir of a finished `judgefleet score` run")
        return name or path.resolve().name, path, True
    if path.suffix.lower() not in FORMATS:
        raise DatasetError(f"SOURCE '{raw}' is neither a score dir nor a data file; {_HINT}")
    return name or path.stem, path, False


def _id_field(paths, given: Optional[str]) -> Optional[str]:
    """The id_field data files are read with: --id-field, else the one the score dirs were scored with."""
    recorded = {}
    for name, path, is_dir in paths:
        if is_dir:
            try:
                fp = json.loads((path / "job.json").read_text()).get("fingerprint", {})
            except (OSError, ValueError):
                continue  # no job.json: nothing to check against
            if "dataset.id_field" in fp:
                recorded[name] = fp["dataset.id_field"]
    if given is not None:
        for name, value in recorded.items():
            if (value or None) != (given or None):
                fix = f"pass --id-field {value}" if value else "leave --id-field out"
                raise ConfigError(f"--id-field '{given}', but score dir '{name}' was scored with dataset.id_field="
                                  f"{value}; their row_ids would not match: {fix}")
        return given or None
    found = set(recorded.values())
    if len(found) > 1:
        raise ConfigError(f"the score dirs were scored with different dataset.id_field values ({sorted(map(str, found))}); "
                          "their row_ids cannot be joined: compare dirs scored alike")
    return found.pop() if found else None


def _read(name: str, path: Path, score_dir: bool, wanted: Sequence[str], id_field: Optional[str]) -> _Input:
    return _read_score_dir(name, path, wanted) if score_dir else _read_data_file(name, path, wanted, id_field)


def _read_score_dir(name: str, path: Path, wanted: Sequence[str]) -> _Input:
    # A shard is finished once its manifest exists (jobs.data.resume); others may be half written.
    shards = [p for p in sorted((path / "scores").glob("part-*.parquet"))
              if p.with_name(p.name.replace(".parquet", ".manifest.json")).is_file()]
    if not shards:
        raise DatasetError(f"score dir '{path}' has no finished shard (a part-*.parquet with its manifest); "
                           "let `judgefleet score` finish, or run it again to resume")
    if not (path / "summary.json").is_file():
        log.warning("score dir %s has no summary.json: the run may not have finished; comparing its finished shards", path)
    columns: List[str] = []
    rows: Dict[str, Dict[str, Any]] = {}
    try:
        for shard in shards:
            schema = pq.read_schema(shard)
            columns.extend(c for c in schema.names if c not in columns)
            if "score" in schema.names and pa.types.is_string(schema.field("score").type):
                raise ConfigError(f"score dir '{path}' holds relative (A/B) verdicts; agree compares absolute scores - "
                                  "give dirs scored with judge.mode=absolute")
            probe = _Input(name, path, True, list(schema.names), {})
            keep = [ROW_ID, *(c for c in _SCORE_FIELDS if c in schema.names),
                    *(s for s in (probe.stored(c) for c in wanted) if s)]
            for row in pq.read_table(shard, columns=list(dict.fromkeys(keep))).to_pylist():
                rows[row.pop(ROW_ID)] = row
    except (OSError, pa.ArrowException) as e:
        raise DatasetError(f"score dir '{path}': cannot read its shards ({e}); is it a `judgefleet score` output dir?") from None
    if "score" not in columns or ROW_ID not in columns:
        raise DatasetError(f"score dir '{path}' has no 'score' and 'row_id' columns; give a `judgefleet score` output dir")
    return _Input(name, path, True, columns, rows)


def _read_data_file(name: str, path: Path, wanted: Sequence[str], id_field: Optional[str]) -> _Input:
    try:
        check_readable([path], None)
        stream = RowStream([path], None, id_field, None, reserved=RESULT_COLUMNS)
        columns: List[str] = []
        rows: Dict[str, Dict[str, Any]] = {}
        skipped = 0
        for table in stream.tables():
            columns.extend(c for c in table.column_names if c not in columns)
            keep = [c for c in (ROW_ID, READ_ERROR, *wanted, *(f"input_{w}" for w in wanted)) if c in table.column_names]
            for row in table.select(list(dict.fromkeys(keep))).to_pylist():
                if row.pop(READ_ERROR, None):
                    skipped += 1
                    continue
                rows[row.pop(ROW_ID)] = row
    except (OSError, UnicodeDecodeError, pa.ArrowException) as e:
        raise DatasetError(f"SOURCE '{path}' cannot be read as a data file ({e}); {_HINT}") from None
    return _Input(name, path, False, columns, rows, skipped=skipped)


def _holder(inputs: Sequence[_Input], column: str, option: str) -> _Input:
    for i in inputs:
        if i.stored(column):
            return i
    shown = ", ".join(c for c in inputs[0].columns if c not in RESULT_COLUMNS)[:300]
    raise ConfigError(f"{option} '{column}': no SOURCE has a column '{column}' (columns of {inputs[0].name}: {shown}); "
                      "name a column of the data file, or add the data file as a SOURCE")


# -- sources -------------------------------------------------------------------------------
def _judge(i: _Input) -> Source:
    values, samples, unreadable = {}, {}, 0
    for row_id, row in i.rows.items():
        raw = row.get("score")
        values[row_id] = _number(raw)
        unreadable += raw is not None and values[row_id] is None
        samples[row_id] = [_number(v) for v in (row.get("scores") or [])]
    models = Counter(r.get("judge_model") for r in i.rows.values() if r.get("judge_model"))
    return Source(i.name, JUDGE, str(i.path), values, samples if any(samples.values()) else None,
                  judge_model=models.most_common(1)[0][0] if models else None, unreadable=unreadable)


def _references(i: _Input, column: str) -> List[Source]:
    """A reference column: its mean as one source and, when rows hold lists, each run as its own."""
    stored = i.stored(column)
    runs: Dict[str, Optional[List[Optional[float]]]] = {}
    unreadable = 0
    for row_id, row in i.rows.items():
        raw = row.get(stored)
        runs[row_id] = parse_reference(raw)
        unreadable += raw is not None and runs[row_id] is None
    k = max((len(r) for r in runs.values() if r), default=0)
    if k == 0:
        example = next((repr(r.get(stored))[:40] for r in i.rows.values() if r.get(stored) is not None), "none")
        raise ConfigError(f"--ref '{column}' in {i.name} holds no scores (e.g. {example}); give a column of numbers "
                          "or lists of numbers")
    origin = f"{i.path} column {column}"

    def mean(r):
        got = [v for v in r or [] if v is not None]
        return float(np.mean(got)) if got else None

    out = [Source(column, REFERENCE, origin, {rid: mean(r) for rid, r in runs.items()},
                  samples={rid: r or [] for rid, r in runs.items()} if k > 1 else None, unreadable=unreadable)]
    if k > 1:
        for j in range(k):
            values = {rid: (r[j] if r and j < len(r) else None) for rid, r in runs.items()}
            out.append(Source(f"{column}[{j + 1}]", REFERENCE_RUN, f"{origin}, run {j + 1}", values, parent=column))
    return out


def parse_reference(value: Any) -> Optional[List[Optional[float]]]:
    """A reference cell -> its runs: 4 -> [4.0]; [5, 4] -> [5.0, 4.0]; "[5, 5, 5]" -> [5.0, 5.0, 5.0].

    None when there is nothing readable (empty, NaN, text that is no number or list of numbers).
    """
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)  # Python-style lists, e.g. "[5., 4.]" or "(5, 4)"
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                return None
    if isinstance(value, (list, tuple)):
        runs = [_number(v) for v in value]
        return runs if any(v is not None for v in runs) else None
    number = _number(value)
    return None if number is None else [number]


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                return None
        else:
            return None
    value = float(value)
    return value if math.isfinite(value) else None


# -- joining -------------------------------------------------------------------------------
def _join(inputs: Sequence[_Input], sources: Sequence[Source]) -> Joined:
    order: Dict[str, None] = {}
    for s in sources:
        order.update(dict.fromkeys(s.values))
    row_ids = list(order)
    index = {rid: n for n, rid in enumerate(row_ids)}
    scores, present, samples = {}, {}, {}
    for s in sources:
        col = np.full(len(row_ids), np.nan)
        here = np.zeros(len(row_ids), bool)
        for rid, v in s.values.items():
            here[index[rid]] = True
            if v is not None:
                col[index[rid]] = v
        scores[s.name], present[s.name] = col, here
        if s.samples:
            k = max(len(v) for v in s.samples.values())
            mat = np.full((len(row_ids), k), np.nan)
            for rid, vals in s.samples.items():
                for j, v in enumerate(vals):
                    if v is not None:
                        mat[index[rid], j] = v
            samples[s.name] = mat
    return Joined(row_ids, list(sources), scores, present, samples)


def _groups(row_ids: Sequence[str], holder: _Input, column: str) -> np.ndarray:
    """The cluster key of each row; a row without one (or not in that SOURCE) is a cluster alone."""
    stored = holder.stored(column)
    keys = []
    for rid in row_ids:
        value = holder.rows.get(rid, {}).get(stored)
        keys.append(f"\0row:{rid}" if value is None else json.dumps(value, sort_keys=True, default=str))
    return np.array(keys, dtype=object)
