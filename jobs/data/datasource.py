"""Read a dataset as a stream of rows, each with a stable, unique `row_id`, for Ray Data.

One read task streams every file in order, in chunks: the global row position is known, a
duplicate row can be told apart from the first one, and nothing holds the whole dataset (JSON
arrays excepted: the file is one document). A line or record that cannot be read becomes a row
that carries `_read_error` instead of stopping the job, so output rows always equal input rows
(`records`). Every chunk has the same columns and types, decided over the whole dataset first
(`columns`), so blocks and shards share one schema.

`row_id` is the `id_field` value when configured, else a hash of the row's content; the k-th
repeat of the same content gets "-k", so ids survive reordering and insertion of other rows.
Ids are unique per input row: a suffix never takes an id another row already has (explicit ids
"x", "x", "x-2" become "x", "x-2", "x-2-2"), or a resumed run would take two rows for one.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Set

import pyarrow as pa

from jobs.data import storage
from jobs.data.columns import InputColumns, as_json, scan_columns
from jobs.data.records import BOM, FORMATS, count_records, file_format, iter_records, read_records
from jobs.data.storage import Location
from jobs.errors import DatasetError

__all__ = ["FORMATS", "ROW_ID", "ROW_INDEX", "READ_ERROR", "resolve_paths", "file_format", "iter_records",
           "check_readable", "count_rows", "content_hash", "RowStream", "make_datasource"]

ROW_ID = "row_id"
ROW_INDEX = "row_index"
READ_ERROR = "_read_error"


def resolve_paths(path: str, fmt: Optional[str] = None) -> List[Location]:
    """The files a dataset path names, in a stable order; DatasetError if there are none. A URI
    (s3://bucket/data.jsonl, s3://bucket/dir, s3://bucket/dir/*.jsonl) names files on object storage."""
    p = storage.location(path, "dataset.path")
    if storage.is_remote(p):
        try:
            found = storage.find_files(p)
        except OSError as e:
            raise DatasetError(f"dataset.path: {storage.problem(p, e)}") from None
        files = [f for f in found if fmt or f.suffix.lower() in FORMATS]
    elif p.is_file():
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


def check_readable(files: Sequence[Location], fmt: Optional[str]) -> dict:
    """Fail before any Ray work if the dataset cannot be opened; return the first record."""
    for f in files:
        if not storage.is_remote(f) and not os.access(f, os.R_OK):
            raise DatasetError(f"dataset file '{f}' is not readable")
        kind = file_format(f, fmt)
        if kind == "json":
            with storage.open_input(f) as fh:
                head = fh.read(64).lstrip()
                if head.startswith(BOM):
                    head = head[len(BOM):].lstrip()
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - 64))
                tail = fh.read().rstrip()
            if not head.startswith((b"[", b"{")) or not tail.endswith((b"]", b"}")):
                raise DatasetError(
                    f"dataset '{f}' is not a complete JSON document (it may be truncated); "
                    "fix the file, or use .jsonl for one record per line"
                )
    try:
        for rec, _err in iter_records(files, fmt):
            if rec is not None:
                return rec
    except OSError as e:
        if not any(storage.is_remote(f) for f in files):
            raise
        raise DatasetError(f"dataset.path: {storage.problem(files[0], e)}") from None
    return {}


def count_rows(files: Sequence[Location], fmt: Optional[str]) -> Optional[int]:
    """Rows in the dataset when cheap to know (for the progress bar), else None."""
    total = 0
    for f in files:
        kind = file_format(f, fmt)
        if kind == "json" and storage.size(f) >= 256 << 20:
            return None
        total += count_records(f, kind)
    return total


def content_hash(record: Dict[str, Any]) -> str:
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def csv_hash_view(record: Dict[str, str]) -> Dict[str, Any]:
    """A CSV row as its content hash sees it: a cell that is exactly a JSON number or true/false is
    hashed as that value, so a table gets the same ids from CSV as from JSON or Parquet (as it did
    when pyarrow typed CSV cells, so outputs made then still resume). Only the hash: the row keeps
    its text. "1e3" and "007" stay text here too, as they do not read back to themselves."""
    return {k: _csv_number(v) for k, v in record.items()}


def _csv_number(cell: str) -> Any:
    if not cell or cell[0] not in "-0123456789tf" or len(cell) > 40:
        return cell
    try:
        value = json.loads(cell)
    except ValueError:
        return cell
    return value if isinstance(value, (int, float, bool)) and json.dumps(value) == cell else cell


class RowStream:
    """Records -> pyarrow tables with row_id, position and read errors (runs in the read task)."""

    def __init__(self, files: Sequence[Location], fmt: Optional[str], id_field: Optional[str],
                 limit: Optional[int], reserved: Sequence[str] = (), chunk_rows: int = 256,
                 annotate: Optional[Callable[[Optional[dict]], dict]] = None, skip: frozenset = frozenset(),
                 columns: Optional[InputColumns] = None):
        self.skip = skip  # row ids already scored (a resumed run): counted, not emitted
        self.annotate = annotate  # record -> extra columns, computed on the record as read (types intact)
        self.files = list(files)
        self.fmt = fmt
        self.id_field = id_field
        self.limit = limit
        self.reserved = set(reserved) | {ROW_ID, ROW_INDEX, READ_ERROR}
        self.chunk_rows = chunk_rows
        # The dataset's columns and types; scanned here when not given (the score job scans once,
        # in the driver, and checks them against the finished shards).
        self.columns = columns

    def tables(self) -> Iterator[pa.Table]:
        columns = self.columns or scan_columns(self.files, self.fmt, self.reserved)
        extra = pa.schema([(ROW_ID, pa.string()), (ROW_INDEX, pa.int64()), (READ_ERROR, pa.string()),
                           *((name, pa.string()) for name in (self.annotate(None) if self.annotate else {}))])
        seen: Dict[str, int] = {}
        # Every id given out, when explicit ids can meet the suffixes ("x-2" in the data); content
        # hashes have no "-", so without id_field `seen` alone keeps them unique.
        used: Optional[Set[str]] = set() if self.id_field else None
        chunk: List[dict] = []
        position = 0
        for path in self.files:
            csv_file = file_format(path, self.fmt) == "csv"
            for rec, error in read_records([path], self.fmt):
                if self.limit is not None and position >= self.limit:
                    break
                row = self._row(columns, rec, error, position, seen, used, csv_file)
                position += 1
                if row is None:
                    continue
                chunk.append(row)
                if len(chunk) >= self.chunk_rows:
                    yield columns.table(chunk, extra)
                    chunk = []
        if chunk:
            yield columns.table(chunk, extra)

    def _row(self, columns: InputColumns, rec: Optional[dict], error: Optional[str], position: int,
             seen: Dict[str, int], used: Optional[Set[str]], csv_file: bool) -> Optional[dict]:
        if rec is None:
            base, row = f"unreadable-{position}", {}
        else:
            row = columns.row(rec)
            hashed = csv_hash_view(rec) if csv_file else rec
            if self.id_field:
                value = rec.get(self.id_field)
                if value is None or value == "":
                    error = error or f"id field '{self.id_field}' is missing in this row"
                    base = content_hash(hashed)
                else:
                    base = value if isinstance(value, str) else \
                        as_json(value) if isinstance(value, (dict, list)) else str(value)
            else:
                base = content_hash(hashed)
        count = seen.get(base, 0) + 1
        seen[base] = count
        if count > 1 and self.id_field and rec is not None and error is None:
            error = f"duplicate id '{base}' (occurrence {count}); ids in '{self.id_field}' must be unique"
        row_id = base if count == 1 else f"{base}-{count}"
        if used is not None:
            while row_id in used:  # taken by an earlier row's own id or suffix: the next free suffix
                count += 1
                row_id = f"{base}-{count}"
            seen[base] = count
            used.add(row_id)
        if row_id in self.skip:
            return None
        row[ROW_ID] = row_id
        row[ROW_INDEX] = position
        row[READ_ERROR] = error
        if self.annotate is not None:
            row.update(self.annotate(rec if rec is not None and error is None else None))
        return row


def make_datasource(stream: RowStream):
    """A Ray Data datasource with one read task that streams `stream.tables()`.

    A dataset on object storage is read where the task runs: the task takes this process's AWS
    settings along (endpoint, region, credentials), as `ray job submit --runtime-env-json` would,
    so a worker started before they were set, or on a node without them, reads what the driver can."""
    from ray.data.block import BlockMetadata
    from ray.data.datasource import Datasource, ReadTask

    size = sum(storage.size(f) for f in stream.files)
    env = storage.environment() if any(storage.is_remote(f) for f in stream.files) else {}

    def read() -> Iterator[pa.Table]:
        storage.apply_environment(env)
        return stream.tables()

    class _JudgeRows(Datasource):
        def estimate_inmemory_data_size(self) -> Optional[int]:
            return size

        def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> List[ReadTask]:
            meta = BlockMetadata(num_rows=None, size_bytes=self.estimate_inmemory_data_size(), exec_stats=None,
                                 input_files=[str(f) for f in stream.files])
            return [ReadTask(read if env else stream.tables, meta)]

        def get_name(self) -> str:
            return "JudgeRows"

    return _JudgeRows()
