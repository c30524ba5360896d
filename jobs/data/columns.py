"""One Arrow type per input column for the whole dataset, so every block and every shard share one schema.

Typed one block at a time, a column of numbers whose 300th row is text, or nulls until row 500,
gave blocks of different schemas: the shard writer failed when one shard held both, and shards
typed apart could not be read together. So the types are decided before the first row is read,
over the whole dataset, with pyarrow's own inference and promotion (int and float: float; null
and anything: that thing; structs: the union of their fields). A column whose values cannot
share a type (int and text, a scalar and a list) is text: its strings as they are, every other
value as JSON. CSV columns are text (`records`), Parquet columns keep their files' types.

Input names that clash with the output's own columns (`score`, `row_id`, ...) get `input_`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

import pyarrow as pa

from jobs.data.records import csv_header, file_format, read_records

TEXT = pa.string()
# A dict column with more keys than this across the dataset (ids as keys, say) is JSON text: as a
# struct it would be one Parquet column per key.
MAX_STRUCT_FIELDS = 100
_CHUNK = 1024
_ARROW_ERRORS = (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OverflowError, TypeError, ValueError)


@dataclass
class InputColumns:
    """The dataset's columns: input key -> output name, and one type per output name, in first-seen order."""

    names: Dict[str, str] = field(default_factory=dict)
    types: Dict[str, pa.DataType] = field(default_factory=dict)

    def schema(self) -> pa.Schema:
        return pa.schema(list(self.types.items()))

    def describe(self) -> List[List[str]]:
        """[[name, type], ...] for job.json and error messages."""
        return [[name, str(t)] for name, t in self.types.items()]

    def row(self, record: Dict[str, Any]) -> Dict[str, Any]:
        """A record's values under their output names (a key the scan did not see is dropped)."""
        return {self.names[k]: v for k, v in record.items() if k in self.names}

    def table(self, rows: List[Dict[str, Any]], extra: pa.Schema) -> pa.Table:
        """Rows -> a table of exactly these columns, then `extra`'s, whatever values a block holds."""
        arrays = [column(name, [r.get(name) for r in rows], t) for name, t in self.types.items()]
        arrays += [pa.array([r.get(f.name) for r in rows], f.type) for f in extra]
        return pa.Table.from_arrays(arrays, schema=pa.schema([*self.schema(), *extra]))


def column(name: str, values: List[Any], t: pa.DataType) -> pa.Array:
    if t == TEXT:
        return pa.array([v if v is None or isinstance(v, str) else as_json(v) for v in values], TEXT)
    try:
        return pa.array(values, t)
    except _ARROW_ERRORS as e:  # the scan typed every value: this is a bug, say where
        raise TypeError(f"input column '{name}' does not fit its scanned type {t}: {e}") from None


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def scan_columns(files: Sequence[Path], fmt: Optional[str], reserved: Iterable[str] = ()) -> InputColumns:
    """Every input column of the files and the one type it gets (reads JSON and JSONL whole:
    a column's type can change at its last row)."""
    types: Dict[str, pa.DataType] = {}

    def merge(key: str, t: pa.DataType) -> None:
        t = t if key not in types else unify(types[key], t)
        types[key] = TEXT if _too_wide(t) else t  # stop growing a struct of ever new keys early

    for path in files:
        kind = file_format(path, fmt)
        if kind == "csv":
            for key in csv_header(path):
                merge(key, TEXT)
        elif kind == "parquet":
            from jobs.data.storage import read_schema

            for f in read_schema(path):
                merge(f.name, f.type)
        else:
            chunk: List[dict] = []
            for rec, _error in read_records([path], fmt):
                if rec is not None:
                    chunk.append(rec)
                if len(chunk) >= _CHUNK:
                    _scan_chunk(chunk, merge)
                    chunk = []
            _scan_chunk(chunk, merge)
    out = InputColumns()
    taken = set(reserved) | set(types)
    for key, t in types.items():
        name = key
        if key in reserved:  # a clash keeps its value aside, under a name no other column has
            name = f"input_{key}"
            while name in taken:
                name = f"input_{name}"
            taken.add(name)
        out.names[key] = name
        out.types[name] = t if writable(t) else TEXT
    return out


def _scan_chunk(chunk: List[dict], merge) -> None:
    keys = list(dict.fromkeys(k for rec in chunk for k in rec))
    for key in keys:
        merge(key, infer([rec.get(key) for rec in chunk]))


def infer(values: List[Any]) -> pa.DataType:
    try:
        t = pa.array(values).type
    except _ARROW_ERRORS:
        return TEXT
    # pyarrow reads [0.5, True] as doubles (True -> 1.0): a flag must not become a number.
    return TEXT if _bool_as_number(t, values) else t


def _bool_as_number(t: pa.DataType, values: List[Any]) -> bool:
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return any(type(v) is bool for v in values)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _bool_as_number(t.value_type, [x for v in values if isinstance(v, list) for x in v])
    if pa.types.is_struct(t):
        return any(_bool_as_number(f.type, [v.get(f.name) for v in values if isinstance(v, dict)]) for f in t)
    return False


def unify(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if a == TEXT or b == TEXT:
        return TEXT
    try:
        both = [pa.schema([("c", a)]), pa.schema([("c", b)])]
        return pa.unify_schemas(both, promote_options="permissive").field(0).type
    except _ARROW_ERRORS:
        return TEXT


def writable(t: pa.DataType) -> bool:
    """Whether Parquet stores the type and it stays a sane number of columns."""
    if pa.types.is_struct(t):
        return 0 < t.num_fields <= MAX_STRUCT_FIELDS and all(writable(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return writable(t.value_type)
    if pa.types.is_map(t):
        return writable(t.key_type) and writable(t.item_type)
    return True


def _too_wide(t: pa.DataType) -> bool:
    if pa.types.is_struct(t):
        return t.num_fields > MAX_STRUCT_FIELDS or any(_too_wide(t.field(i).type) for i in range(t.num_fields))
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _too_wide(t.value_type)
    return False


def mismatches(columns: InputColumns, shard_schema: pa.Schema) -> List[str]:
    """How a finished shard's input columns differ from this run's ('name: shard type -> now type')."""
    out = []
    for name, t in columns.types.items():
        if name not in shard_schema.names:
            out.append(f"{name}: absent -> {t}")
        else:
            was = shard_schema.field(name).type
            if was != t and not pa.types.is_null(was):  # an all-null column reads as any type
                out.append(f"{name}: {was} -> {t}")
    return out
