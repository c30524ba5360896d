"""Dataset files -> records, one per input row, in file order; what cannot be read is said per row.

Every format is read as text that may be broken: bytes that are not UTF-8 and `\\ud800`-style
escapes both end as lone surrogates in Python strings, which neither Arrow nor Parquet nor the
judge's HTTP body can carry. Such a record keeps its values (the bad characters written as
`\\udcff` escapes, so the user can find them) and gets an error: it is written, not judged.
A UTF-8 byte order mark at the start of a file is dropped (Excel and Windows tools add one).

CSV cells stay the text they are: "007", "1e3", "NA", "null" and "" are strings, as a CSV file
cannot say otherwise (a user's id "007" must not become 7). A line whose field count differs from
the header's is an unreadable row, not a failed job.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Iterator, List, Optional, Sequence, Tuple

from jobs.data import storage
from jobs.data.storage import Location
from jobs.errors import DatasetError

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet", ".csv": "csv"}
BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"  # JSON's whitespace: a line of only these is no row
# Python's csv refuses fields over 128 KiB by default; a long response is a row, not an error.
csv.field_size_limit(2**31 - 1)

Record = Tuple[Optional[dict], Optional[str]]  # (values, why it cannot be judged); values None: nothing read


def file_format(path: Location, fmt: Optional[str] = None) -> str:
    found = fmt or FORMATS.get(path.suffix.lower())
    if found is None:
        raise DatasetError(f"dataset.path: cannot tell the format of '{path}'; set dataset.format to json, jsonl, parquet or csv")
    return found


def read_records(files: Sequence[Location], fmt: Optional[str] = None) -> Iterator[Record]:
    """Per input row, in order: (record, None), (record, error) when its text is not UTF-8 (the
    record with the bad characters escaped), or (None, error) when nothing could be read."""
    for path in files:
        kind = file_format(path, fmt)
        if kind == "jsonl":
            records = _jsonl(path)
        elif kind == "json":
            records = _json_array(path)
        elif kind == "parquet":
            records = _parquet(path)
        else:
            records = _csv(path)
        for rec, error, where in records:
            if rec is not None and error is None:
                rec, error = checked_text(rec, f"{path.name} {where}")
            yield rec, error if error is None else _escape(error)  # a file name may hold bad bytes too


def iter_records(files: Sequence[Location], fmt: Optional[str] = None) -> Iterator[Record]:
    """(record, None) per readable row and (None, error) per unreadable one, in order."""
    for rec, error in read_records(files, fmt):
        yield (None, error) if error else (rec, None)


def checked_text(rec: dict, where: str) -> Record:
    """The record, or its escaped copy and an error when some key or value is not valid UTF-8."""
    try:  # the common case costs one encode of the whole record
        json.dumps(rec, ensure_ascii=False, default=str).encode("utf-8")
        return rec, None
    except UnicodeEncodeError:
        pass
    bad: List[Tuple[str, str]] = []
    clean = _escaped(rec, "", bad)
    field, text = bad[0]
    return clean, (f"{where}: {field or 'a column name'} is not valid UTF-8 text (it holds {text}: an invalid byte "
                   "or a lone surrogate); not sent")


def _escaped(value: Any, path: str, bad: List[Tuple[str, str]]) -> Any:
    if isinstance(value, str):
        return _escape_str(value, path, bad)
    if isinstance(value, dict):
        return {_escape_str(str(k), path, bad): _escaped(v, _join(path, str(k)), bad) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_escaped(v, f"{path}[{i}]", bad) for i, v in enumerate(value)]
    return value


def _escape_str(text: str, path: str, bad: List[Tuple[str, str]]) -> str:
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError as e:
        bad.append((f"'{_escape(path)}'" if path else "", repr(text[e.start:e.end]).strip("'")))
        return _escape(text)


def _escape(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# -- formats --------------------------------------------------------------------------------
def _jsonl(path: Location):
    # Lines end at b"\n" only (JSON Lines); a bad byte spoils its own line's strings, no other line.
    with storage.open_input(path) as f:
        for n, raw in enumerate(f, start=1):
            if n == 1 and raw.startswith(BOM):
                raw = raw[len(BOM):]
            if not raw.strip(_BLANK):
                continue
            line = raw.decode("utf-8", "surrogateescape")
            try:
                rec = json.loads(line)
            except (ValueError, RecursionError) as e:
                yield None, f"{path.name} line {n}: not valid JSON ({_json_problem(e)})", ""
                continue
            if isinstance(rec, dict):
                yield rec, None, f"line {n}"
            else:
                yield None, f"{path.name} line {n}: expected a JSON object, got {type(rec).__name__}", ""


def _json_problem(e: Exception) -> str:
    if isinstance(e, json.JSONDecodeError):
        return f"{e.msg} at column {e.colno}"
    if isinstance(e, RecursionError):
        return "nested too deeply"
    return _escape(str(e))  # e.g. an integer of more than 4300 digits


def load_json_document(path: Location) -> Any:
    with storage.open_text(path, encoding="utf-8-sig", errors="surrogateescape") as f:
        return json.load(f)


def _json_array(path: Location):
    try:
        doc = load_json_document(path)
    except (ValueError, RecursionError) as e:
        raise DatasetError(
            f"dataset '{path}' is not valid JSON ({_json_problem(e)}); it may be truncated. "
            "For one record per line, use .jsonl"
        ) from None
    if isinstance(doc, dict):  # {"data": [...]} and similar wrappers
        lists = [v for v in doc.values() if isinstance(v, list)]
        doc = lists[0] if len(lists) == 1 else None
    if not isinstance(doc, list):
        raise DatasetError(f"dataset '{path}' must hold a JSON array of objects (one per row)")
    for i, rec in enumerate(doc):
        if isinstance(rec, dict):
            yield rec, None, f"item {i}"
        else:
            yield None, f"{path.name} item {i}: expected a JSON object, got {type(rec).__name__}", ""


def _parquet(path: Location):
    n = 0
    for batch in storage.parquet_file(path).iter_batches(batch_size=1024):
        for rec in batch.to_pylist():
            yield rec, None, f"row {n}"
            n += 1


def csv_header(path: Location) -> List[str]:
    with _open_csv(path) as f:
        return _unique_names(next(csv.reader(f), []))


def _csv(path: Location):
    with _open_csv(path) as f:
        reader = csv.reader(f)
        try:
            header = _unique_names(next(reader, []))
            for fields in reader:
                if not fields:  # a blank line
                    continue
                n = reader.line_num
                if len(fields) != len(header):
                    yield None, f"{path.name} line {n}: {len(fields)} fields, the header has {len(header)}", ""
                    continue
                yield dict(zip(header, fields)), None, f"line {n}"
        except csv.Error as e:
            # Not reached in practice (the csv module is lenient, and fields may be as long as
            # they come); if it is, that row is unreadable and the rows before it are kept.
            yield None, f"{path.name} line {reader.line_num}: not valid CSV ({e})", ""


def _open_csv(path: Location) -> io.TextIOWrapper:
    # newline="" as the csv module asks: quoted fields may hold line breaks.
    return storage.open_text(path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _unique_names(names: List[str]) -> List[str]:
    """A header that repeats a name keeps both columns: the second 'a' is 'a.1' (as pandas names it)."""
    out: List[str] = []
    for name in names:
        candidate, k = name, 0
        while candidate in out:
            k += 1
            candidate = f"{name}.{k}"
        out.append(candidate)
    return out


def count_records(path: Location, kind: str) -> int:
    """Rows `read_records` yields for one file (unreadable ones included), without parsing JSON."""
    if kind == "parquet":
        return storage.parquet_file(path).metadata.num_rows
    if kind == "jsonl":
        with storage.open_input(path) as fh:
            return sum(1 for n, line in enumerate(fh)
                       if line.strip(_BLANK) and not (n == 0 and line.strip(_BLANK) == BOM))
    return sum(1 for _ in (_csv(path) if kind == "csv" else _json_array(path)))
