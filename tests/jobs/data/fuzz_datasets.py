"""Hostile datasets for fuzzing `judgefleet score`, and what its output must hold for each.

Hypothesis draws a plan (format, size, columns whose type changes at a drawn row, BOM, ids, and
hostile rows at drawn places: text that is not UTF-8, broken lines, huge and empty fields,
repeated rows and ids, any unicode); a generator seeded by the plan fills the bulk of the rows,
so a plan of 700 rows costs hypothesis a few dozen draws. `write` puts the files on disk and
returns the expected input rows; `check_output` reads the shards and lists every property that
does not hold (an empty list: all hold). Used by tests/jobs/commands/test_dataset_fuzz.py (a
fixed-seed slice) and benchmarks/dataset_fuzz.py (the long campaign).
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import strategies as st

from jobs.judge.reasons import Reason

FORMATS = ("jsonl", "json", "csv", "parquet", "mixed")
KINDS = ("int", "float", "str", "bool", "null", "list", "dict")
HOSTILE = ("bad_bytes", "surrogate", "broken", "huge", "empty", "repeat", "unicode", "reserved_name")
ID_POOL = ["x", "x-2", "x-2-2", "7", 7, "", None, "unreadable-3", "x"]
RUBRIC = "Is the response correct and complete? Score 1: wrong. Score 5: right."
TEXTS = ["plain answer", "007", "1e3", "NA", "null", "", " ", "true", "-0", "a,b;c\t\"quoted\"", "line\nbreak\r\nend",
         "\u2028sep\u2029", "\x85nel", "\ufeffinner bom", "\x00nul", "emoji \U0001F600\u200d\U0001F4BB", "עברית",
         "中文字符", "e\u0301", "\\ud800 as text", "{\"not\": \"a dict\"}", "[1, 2]", "=SUM(A1)", "\ud7ff\ue000"]
BROKEN = ["{not json", '{"instruction": "trunc', "[1, 2]", "42", '"a string"', "\x0c", "null", "{\"a\": 1}}",
          "[" * 3000, "1" * 5000, '{"a": ' + "9" * 5000 + "}"]


@dataclass
class Plan:
    fmt: str
    rows: int
    seed: int
    bom: bool
    id_field: bool
    columns: List[tuple]  # (name, kind before, kind after, the row where it changes)
    hostile: Dict[int, str]  # row -> what is wrong with it
    texts: List[str]  # any unicode, from hypothesis, used in text fields

    def describe(self) -> str:
        return (f"{self.fmt} rows={self.rows} seed={self.seed} bom={self.bom} id_field={self.id_field} "
                f"columns={self.columns} hostile={dict(sorted(self.hostile.items()))}")


@st.composite
def plans(draw, max_rows: int = 700) -> Plan:
    rows = draw(st.integers(1, max_rows))
    fmt = draw(st.sampled_from(FORMATS))
    columns = [(f"c{i}", draw(st.sampled_from(KINDS)), draw(st.sampled_from(KINDS)), draw(st.integers(0, rows)))
               for i in range(draw(st.integers(0, 4)))]
    hostile = draw(st.dictionaries(st.integers(0, rows - 1), st.sampled_from(HOSTILE), max_size=min(rows, 12)))
    return Plan(fmt=fmt, rows=rows, seed=draw(st.integers(0, 2**32 - 1)), bom=draw(st.booleans()),
                id_field=draw(st.booleans()), columns=columns, hostile=hostile,
                texts=draw(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=5)))


@dataclass
class Expected:
    records: List[Optional[dict]] = field(default_factory=list)  # per input row; None: not an object
    unreadable: List[bool] = field(default_factory=list)  # must end with an unreadable_row error
    bad_text: List[bool] = field(default_factory=list)  # its text is not UTF-8: values kept escaped
    id_field: Optional[str] = None
    path: Optional[Path] = None


# -- generating -----------------------------------------------------------------------------
def _value(rng: random.Random, kind: str, texts: List[str]) -> Any:
    if kind == "int":
        return rng.choice([0, -1, 7, 2**53 + 1, -(2**62), rng.randint(-1000, 1000)])
    if kind == "float":
        return rng.choice([0.5, -0.0, 1e300, 3.14, float("inf"), float("nan"), rng.random()])
    if kind == "str":
        return rng.choice(TEXTS + texts)
    if kind == "bool":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "list":
        return rng.choice([[], [1, 2], ["a", None], [[1], [2, 3]], [{"k": 1}]])
    return rng.choice([{}, {"k": 1}, {"k": "v", "n": [1]}, {"": 0}, {"k": None}, {f"key{rng.randint(0, 500)}": 1}])


def _record(plan: Plan, rng: random.Random, i: int, texts: List[str]) -> Dict[str, Any]:
    rec: Dict[str, Any] = {"instruction": f"Question {i}: {rng.choice(TEXTS + texts)}",
                           "response": f"Answer {i} {rng.choice(TEXTS + texts)}", "rubric": RUBRIC}
    if plan.id_field:
        rec["id"] = rng.choice(ID_POOL) if rng.random() < 0.15 else f"r{i}"
    for name, before, after, switch in plan.columns:
        if rng.random() < 0.9:  # sometimes absent
            rec[name] = _value(rng, before if i < switch else after, texts)
    kind = plan.hostile.get(i)
    if kind == "huge":
        rec["response"] = "huge " * rng.choice([2000, 40000])
    elif kind == "empty":
        rec[rng.choice(["instruction", "response", "rubric"])] = rng.choice(["", "   ", None])
    elif kind == "unicode":
        rec["response"] = "".join(texts)
    elif kind == "reserved_name":
        rec[rng.choice(["score", "row_id", "_prompt", "errors", "input_score"])] = rng.choice(TEXTS)
    return rec


def records_of(plan: Plan) -> List[Any]:
    """Per input row: a dict, ("broken", text) for a line that is no record, or (kind, dict) for a
    record whose text is not UTF-8 (kind bad_bytes or surrogate; its response holds `marker(i)`,
    which the writer replaces)."""
    rng = random.Random(plan.seed)
    out: List[Any] = []
    for i in range(plan.rows):
        kind = plan.hostile.get(i)
        earlier = [o for o in out if isinstance(o, dict)]
        if kind == "repeat" and earlier:
            out.append(dict(rng.choice(earlier)))
            continue
        rec = _record(plan, rng, i, plan.texts)
        if kind == "broken":
            out.append(("broken", rng.choice(BROKEN)))
        elif kind in ("bad_bytes", "surrogate"):
            rec["response"] = marker(i) + str(rec.get("response"))
            out.append((kind, rec))
        else:
            out.append(rec)
    return out


def marker(i: int) -> str:
    return f"@@BAD{i}@@"


_BAD = {  # what replaces a marker, per format: JSON can escape a lone surrogate, CSV cannot
    ("json", "surrogate"): b"\\ud800", ("json", "bad_bytes"): b"\xff\xfe",
    ("csv", "surrogate"): b"\xed\xa0\x80", ("csv", "bad_bytes"): b"\xff\xfe",
}


def write(plan: Plan, root: Path) -> Expected:
    """The plan's files under `root`, and the expected input rows (`Expected.path`: the dataset path)."""
    root.mkdir(parents=True, exist_ok=True)
    items = records_of(plan)
    exp = Expected(id_field="id" if plan.id_field else None)
    if plan.fmt == "parquet":  # Parquet has neither broken lines nor bad text: those rows are plain ones
        _write_parquet(root / "data", [it[1] if isinstance(it, tuple) else it for it in items if not _broken(it)], exp)
        exp.path = root
    elif plan.fmt == "mixed":
        cut1, cut2 = len(items) // 3, 2 * len(items) // 3
        for name, part in (("00.jsonl", items[:cut1]), ("01.csv", items[cut1:cut2]), ("02.json", items[cut2:])):
            _write_file(root / name, name.split(".")[1], part, plan.bom, exp)
        exp.path = root
    else:
        exp.path = root / f"data.{plan.fmt}"
        _write_file(exp.path, plan.fmt, items, plan.bom, exp)
    return exp


def _broken(item: Any) -> bool:
    return isinstance(item, tuple) and item[0] == "broken"


def _write_file(path: Path, fmt: str, items: List[Any], bom: bool, exp: Expected) -> None:
    start = len(exp.records)
    bad: Dict[int, str] = {}
    for it in items:
        if _broken(it):
            exp.records.append(None)
        else:
            rec = it[1] if isinstance(it, tuple) else it
            if isinstance(it, tuple):
                bad[len(exp.records)] = it[0]
            exp.records.append(_csv_record(rec) if fmt == "csv" else rec)
        exp.unreadable.append(exp.records[-1] is None or len(exp.records) - 1 in bad)
        exp.bad_text.append(len(exp.records) - 1 in bad)
    if fmt == "csv":
        body = _csv_bytes(items, exp, start)
    else:
        chunks = [json.dumps(it[1]).encode() if fmt == "json" and _broken(it) else it[1].encode() if _broken(it)
                  else json.dumps(exp.records[start + j], ensure_ascii=False).encode() for j, it in enumerate(items)]
        body = b"".join(c + b"\n" for c in chunks) if fmt == "jsonl" else b"[" + b",\n".join(chunks) + b"]"
    for i, kind in bad.items():
        body = body.replace(marker(i).encode(), _BAD[("csv" if fmt == "csv" else "json", kind)], 1)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body)


def _csv_record(rec: dict) -> dict:
    return {k: v if isinstance(v, str) else "" if v is None else json.dumps(v) for k, v in rec.items()}


def _csv_bytes(items: List[Any], exp: Expected, start: int) -> bytes:
    recs = exp.records[start:]
    # The header names the columns the config needs even when no row has them (all lines broken).
    needed = ["instruction", "response", "rubric", *(["id"] if exp.id_field else [])]
    fields = list(dict.fromkeys([*needed, *(k for r in recs if r for k in r)]))
    out = io.StringIO(newline="")
    writer = csv.writer(out)
    writer.writerow(fields)
    for j, rec in enumerate(recs):
        if rec is None:  # a line whose field count is not the header's
            out.write("one field\r\n" if len(fields) != 1 else "two,fields\r\n")
            continue
        rec = exp.records[start + j] = {k: rec.get(k, "") for k in fields}  # a CSV row has every column
        writer.writerow([rec[k] for k in fields])
    return out.getvalue().encode("utf-8")


def _write_parquet(stem: Path, recs: List[dict], exp: Expected) -> None:
    """Two files, each typed on its own: a column may be int in one and text in the other."""
    for k, half in enumerate([recs[: len(recs) // 2], recs[len(recs) // 2:]]):
        arrays = {}
        for name in dict.fromkeys(key for r in half for key in r):
            values = [r.get(name) for r in half]
            try:
                arrays[name] = pa.array(values)
                typed = str(arrays[name].type)
                # Parquet cannot store a struct without fields; pyarrow would store [0.5, True] as doubles
                ok = "struct<>" not in typed and not ("bool" not in typed and _has_bool(values))
            except (pa.ArrowException, OverflowError, TypeError, ValueError):
                ok = False
            if not ok:  # what a user would do: JSON text
                for r in half:
                    if name in r and r[name] is not None and not isinstance(r[name], str):
                        r[name] = json.dumps(r[name])
                arrays[name] = pa.array([r.get(name) for r in half], pa.string())
        for name in ("instruction", "response", "rubric", *(["id"] if exp.id_field else [])):
            if name not in arrays:  # an empty half still has the columns the config needs
                arrays[name] = pa.array([None] * len(half), pa.string())
                for r in half:
                    r[name] = None
        table = pa.table(arrays)
        pq.write_table(table, stem.with_name(f"{stem.name}-{k}.parquet"))
        exp.records.extend(half)
        exp.unreadable.extend([False] * len(half))
        exp.bad_text.extend([False] * len(half))


def _has_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return True
    if isinstance(value, list):
        return any(map(_has_bool, value))
    if isinstance(value, dict):
        return any(map(_has_bool, value.values()))
    return False


# -- checking -------------------------------------------------------------------------------
def expected_ids(exp: Expected) -> None:
    """Rows whose explicit id repeats an earlier row's, or is missing, must end unreadable."""
    if not exp.id_field:
        return
    seen = set()
    for i, rec in enumerate(exp.records):
        if rec is None:
            continue
        value = rec.get(exp.id_field)
        key = None if value is None or value == "" else value if isinstance(value, str) else str(value)
        if key is None or key in seen:
            exp.unreadable[i] = True
        seen.add(key)


def judgeable(rec: dict) -> bool:
    """Rows the stub judge must score: text fields of a normal size."""
    fields = [rec.get("instruction"), rec.get("response"), rec.get("rubric")]
    return all(isinstance(v, str) and v.strip() for v in fields) and sum(len(v) for v in fields) < 6000


def read_output(out: Path) -> List[dict]:
    shards = sorted((out / "scores").glob("part-*.parquet"))
    return [r for s in shards for r in pq.read_table(s).to_pylist()]


def check_output(exp: Expected, out: Path, reserved=()) -> List[str]:
    """Every property of a score output dir that does not hold, as a sentence (`reserved`: the
    names an input column gives up for input_<name>)."""
    shards = sorted((out / "scores").glob("part-*.parquet"))
    schemas = {pq.read_schema(s) for s in shards}
    problems = [f"shards have {len(schemas)} schemas"] if len(schemas) > 1 else []
    return problems + check_rows(exp, read_output(out), reserved)


def check_rows(exp: Expected, rows: List[dict], reserved=(), judged: bool = True) -> List[str]:
    """The properties of output rows (`judged` False: rows of the reader, with `_read_error`)."""
    expected_ids(exp)
    keys = {k for r in exp.records if r for k in r}
    names = {k: _renamed(k, keys, reserved) for k in keys}
    problems: List[str] = []
    n = len(exp.records)
    if len(rows) != n:
        problems.append(f"{len(rows)} output rows for {n} input rows")
    ids = [r["row_id"] for r in rows]
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} repeated row ids")
    if sorted(r["row_index"] for r in rows) != list(range(n)):
        problems.append("row_index is not each input position once")
    codes = {r.value for r in Reason}
    for row in rows:
        i = row["row_index"]
        if not 0 <= i < n:
            continue
        if judged:
            errors, reasons = row.get("errors"), row.get("error_reasons")
            if row["score"] is None and not errors:
                problems.append(f"row {i}: unscored without an error")
            if errors and (not reasons or len(reasons) != len(errors) or not set(reasons) <= codes):
                problems.append(f"row {i}: errors without matching reason codes ({reasons})")
        else:
            errors = [row["_read_error"]] if row["_read_error"] else None
            reasons = [Reason.UNREADABLE_ROW.value] if errors else None
        rec = exp.records[i]
        if exp.unreadable[i]:
            if not reasons or Reason.UNREADABLE_ROW.value not in reasons:
                problems.append(f"row {i}: should be unreadable_row, got {reasons} {errors}")
            continue
        if not judged and errors:
            problems.append(f"row {i}: read error {errors}")
        if judged and rec is not None and judgeable(rec) and row["score"] is None:
            problems.append(f"row {i}: a plain row was not scored ({errors})")
        if rec is not None:
            for key, value in rec.items():
                name = names[key]
                if name not in row or not same_value(value, row[name]):
                    problems.append(f"row {i}: column {key!r} is {row.get(name)!r:.80}, was {value!r:.80}")
                    break
    return problems[:20]


def _renamed(key: str, keys, reserved) -> str:
    if key not in reserved:
        return key
    name = f"input_{key}"
    while name in keys or name in reserved:
        name = f"input_{name}"
    return name


def same_value(given: Any, stored: Any) -> bool:
    """Whether a stored value is the input value: the same, or its JSON text in a text column."""
    if isinstance(stored, str) and not isinstance(given, str) and given is not None:
        try:
            return same_value(given, json.loads(stored))
        except ValueError:
            return False
    if isinstance(given, float) or isinstance(stored, float):
        if isinstance(given, bool) or isinstance(stored, bool) or given is None or stored is None:
            return given is stored
        try:
            return (math.isnan(given) and math.isnan(stored)) or float(given) == float(stored)
        except TypeError:
            return False
    if isinstance(given, dict):
        return isinstance(stored, dict) and all(same_value(v, stored.get(k)) for k, v in given.items()) and \
            all(v is None for k, v in stored.items() if k not in given)
    if isinstance(given, list):
        return isinstance(stored, list) and len(given) == len(stored) and all(map(same_value, given, stored))
    return given == stored and type(given) is type(stored) or (given is None and stored is None)
