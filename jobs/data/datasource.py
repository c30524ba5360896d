"""Read a dataset as a stream of rows, each with a stable `row_id`, for Ray Data.

One read task streams every file in order, in chunks: the global row position is known, a
duplicate row can be told apart from the first one, and nothing holds the whole dataset (JSON
arrays excepted: the file is one document). A line or record that cannot be read becomes a row
that carries `_read_error` instead of stopping the job, so output rows always equal input rows.

`row_id` is the `id_field` value when configured, else a hash of the row's content; the k-th
repeat of the same content gets "-k", so ids survive reordering and insertion of other rows.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import pyarrow as pa

from jobs.errors import DatasetError

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
ROW_ID = "row_id"
ROW_INDEX = "row_index"
READ_ERROR = "_read_error"


def resolve_paths(path: str, fmt: Optional[str] = None) -> List[Path]:
    """The files a dataset path names, in a stable order; DatasetError if there are none."""
    p = Path(path).expanduser()
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and (fmt or f.suffix.lower() in FORMATS))
    else:
        files = sorted(Path(f) for f in glob.glob(str(p), recursive=True) if os.path.isfile(f))
    if not files:
        raise DatasetError(f"dataset.path: '{path}' matches no file; give a .json, .jsonl, .parquet or .csv file, a directory or a glob")
    for f in files:
        file_format(f, fmt)
    return files


def file_format(path: Path, fmt: Optional[str] = None) -> str:
    found = fmt or FORMATS.get(path.suffix.lower())
    if found is None:
        raise DatasetError(f"dataset.path: cannot tell the format of '{path}'; set dataset.format to json, jsonl, parquet or csv")
    return found


def iter_records(files: Sequence[Path], fmt: Optional[str] = None) -> Iterator[Tuple[Optional[dict], Optional[str]]]:
    """Yield (record, None) per readable row and (None, error) per unreadable one, in order."""
    for path in files:
        kind = file_format(path, fmt)
        if kind == "jsonl":
            yield from _jsonl(path)
        elif kind == "json":
            yield from _json_array(path)
        elif kind == "parquet":
            import pyarrow.parquet as pq

            for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
                for rec in batch.to_pylist():
                    yield rec, None
        else:
            import pyarrow.csv as pcsv

            try:
                reader = pcsv.open_csv(path)
                for batch in reader:
                    for rec in batch.to_pylist():
                        yield rec, None
            except pa.ArrowInvalid as e:
                raise DatasetError(f"dataset '{path}' is not valid CSV: {e}") from None


def _jsonl(path: Path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                yield None, f"{path.name} line {n}: not valid JSON ({e.msg} at column {e.colno})"
                continue
            if isinstance(rec, dict):
                yield rec, None
            else:
                yield None, f"{path.name} line {n}: expected a JSON object, got {type(rec).__name__}"


def _json_array(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except ValueError as e:
        raise DatasetError(
            f"dataset '{path}' is not valid JSON ({e}); it may be truncated. For one record per line, use .jsonl"
        ) from None
    if isinstance(doc, dict):  # {"data": [...]} and similar wrappers
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else None
    if not isinstance(doc, list):
        raise DatasetError(f"dataset '{path}' must hold a JSON array of objects (one per row)")
    for i, rec in enumerate(doc):
        if isinstance(rec, dict):
            yield rec, None
        else:
            yield None, f"{path.name} item {i}: expected a JSON object, got {type(rec).__name__}"


def check_readable(files: Sequence[Path], fmt: Optional[str]) -> dict:
    """Fail before any Ray work if the dataset cannot be opened; return the first record."""
    for f in files:
        if not os.access(f, os.R_OK):
            raise DatasetError(f"dataset file '{f}' is not readable")
        kind = file_format(f, fmt)
        if kind == "json":
            with open(f, "rb") as fh:
                head = fh.read(64).lstrip()
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64))
                tail = fh.read().rstrip()
            if not head.startswith((b"[", b"{")) or not tail.endswith((b"]", b"}")):
                raise DatasetError(
                    f"dataset '{f}' is not a complete JSON document (it may be truncated); "
                    "fix the file, or use .jsonl for one record per line"
                )
    for rec, _err in iter_records(files, fmt):
        if rec is not None:
            return rec
    return {}


def count_rows(files: Sequence[Path], fmt: Optional[str]) -> Optional[int]:
    """Rows in the dataset when cheap to know (for the progress bar), else None."""
    total = 0
    for f in files:
        kind = file_format(f, fmt)
        if kind == "parquet":
            import pyarrow.parquet as pq

            total += pq.ParquetFile(f).metadata.num_rows
        elif kind == "jsonl":
            with open(f, "rb") as fh:
                total += sum(1 for line in fh if line.strip())
        elif kind == "json" and f.stat().st_size < 256 << 20:
            total += sum(1 for _ in _json_array(f))
        elif kind == "csv":
            import pyarrow.csv as pcsv

            total += sum(batch.num_rows for batch in pcsv.open_csv(f))
        else:
            return None
    return total


def content_hash(record: Dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


class RowStream:
    """Records -> pyarrow tables with row_id, position and read errors (runs in the read task)."""

    def __init__(self, files: Sequence[Path], fmt: Optional[str], id_field: Optional[str],
                 limit: Optional[int], reserved: Sequence[str] = (), chunk_rows: int = 256,
                 annotate: Optional[Callable[[dict], dict]] = None, skip: frozenset = frozenset()):
        self.skip = skip  # row ids already scored (a resumed run): counted, not emitted
        self.annotate = annotate  # record -> extra columns, computed on the record as read (types intact)
        self.files = list(files)
        self.fmt = fmt
        self.id_field = id_field
        self.limit = limit
        self.reserved = set(reserved) | {ROW_ID, ROW_INDEX, READ_ERROR}
        self.chunk_rows = chunk_rows

    def tables(self) -> Iterator[pa.Table]:
        seen: Dict[str, int] = {}
        chunk: List[dict] = []
        for position, (rec, error) in enumerate(iter_records(self.files, self.fmt)):
            if self.limit is not None and position >= self.limit:
                break
            row = self._row(rec, error, position, seen)
            if row is None:
                continue
            chunk.append(row)
            if len(chunk) >= self.chunk_rows:
                yield to_table(chunk)
                chunk = []
        if chunk:
            yield to_table(chunk)

    def _row(self, rec: Optional[dict], error: Optional[str], position: int, seen: Dict[str, int]) -> Optional[dict]:
        if rec is None:
            base, row = f"unreadable-{position}", {}
        else:
            # An input column named like an output column keeps its value under input_<name>.
            row = {(f"input_{k}" if k in self.reserved else k): v for k, v in rec.items()}
            if self.id_field:
                value = rec.get(self.id_field)
                if value is None or value == "":
                    error = f"id field '{self.id_field}' is missing in this row"
                    base = content_hash(rec)
                else:
                    base = str(value)
            else:
                base = content_hash(rec)
        count = seen.get(base, 0) + 1
        seen[base] = count
        if count > 1 and self.id_field and rec is not None and error is None:
            error = f"duplicate id '{base}' (occurrence {count}); ids in '{self.id_field}' must be unique"
        row[ROW_ID] = base if count == 1 else f"{base}-{count}"
        if row[ROW_ID] in self.skip:
            return None
        row[ROW_INDEX] = position
        row[READ_ERROR] = error
        if self.annotate is not None:
            row.update(self.annotate(rec if rec is not None and error is None else None))
        return row


def to_table(rows: List[dict]) -> pa.Table:
    """Rows -> table; a column whose values pyarrow cannot type together is kept as JSON text."""
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    names = list(dict.fromkeys(k for r in rows for k in r))
    columns = {}
    for name in names:
        values = [r.get(name) for r in rows]
        try:
            columns[name] = pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            columns[name] = pa.array(
                [v if v is None or isinstance(v, str) else json.dumps(v, default=str) for v in values], pa.string()
            )
    return pa.table(columns)


def make_datasource(stream: RowStream):
    """A Ray Data datasource with one read task that streams `stream.tables()`."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    class _JudgeRows(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return sum(f.stat().st_size for f in stream.files)

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> List[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=self.estimate_inmemory_data_size(), exec_stats=None,
                                 input_files=[str(f) for f in stream.files])
            return [ReadTask(stream.tables, meta)]

        def get_name(self) -> str:
            return "JudgeRows"

    return _JudgeRows()
