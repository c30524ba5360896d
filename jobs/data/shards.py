"""Scored rows -> `scores/part-NNNNN.parquet`, written atomically with a manifest per shard.

Shards are cut in the order rows arrive (Ray Data keeps input order), every `shard_rows` rows or
when the oldest buffered row has waited `flush_s`, whichever comes first: a slow judge's work
reaches disk within a bounded time, so a killed job loses at most that much of it. A shard is
written under a temporary name and renamed (on object storage: uploaded whole, in one request), and
its manifest (row ids, row count) goes beside it after: a reader never sees half a shard
(`jobs.data.storage`).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, List, Optional

import pyarrow as pa

from jobs.data import storage
from jobs.data.datasource import ROW_ID
from jobs.data.storage import Location
from jobs.errors import OutputError


def prepare_output_dir(path: str, scores: bool = True) -> Location:
    """Create the output directory (with its scores/ folder unless not `scores`) and prove it
    writable, before any Ray work. A URI (s3://bucket/dir) is checked with a write and a delete."""
    out = storage.location(path, "output.dir")
    if not storage.is_remote(out) and not Path(path).expanduser().is_absolute() and _in_ray_job_copy():
        raise OutputError(
            f"output.dir: '{path}' is relative, and this job runs in Ray's temporary copy of its working "
            "directory (ray job submit --working-dir), which Ray deletes: the scores would be lost. Give an "
            "absolute path the head node keeps (output.dir=/data/runs/x) or object storage (output.dir=s3://bucket/x)")
    try:
        storage.make_dir(out / "scores" if scores else out)
        probe = out / ".write-test"
        storage.write_atomic(probe, b"ok")
        storage.delete(probe)
    except OSError as e:
        if storage.is_remote(out):
            raise OutputError(f"output.dir: {storage.problem(out, e)}") from None
        raise OutputError(f"output.dir: cannot write to '{out}' ({e.strerror}); choose a writable directory") from None
    return out


def _in_ray_job_copy() -> bool:
    """Whether this process is a Ray job's entrypoint whose working directory Ray unpacked."""
    try:  # the job supervisor hands the entrypoint its runtime env in this variable
        runtime_env = json.loads(os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")).get("runtime_env") or {}
    except (ValueError, AttributeError):
        return False
    return bool(runtime_env.get("working_dir"))


class ShardWriter:
    """`check`, when given, runs before each shard is written (the output lock's: still ours?)."""

    def __init__(self, out_dir: Location, shard_rows: int, start_index: int = 0, flush_s: Optional[float] = None,
                 check: Optional[Callable[[], None]] = None):
        self.check = check
        self.dir = storage.location(out_dir) / "scores"
        self.shard_rows = shard_rows
        self.flush_s = flush_s
        self._oldest: Optional[float] = None  # when the first buffered row arrived
        self.next_index = start_index  # after the finished shards of an earlier run
        self.rows_written = 0
        self.paths: List[Location] = []
        self._buffer: List[pa.Table] = []
        self._buffered = 0

    def add(self, table: pa.Table) -> None:
        while table.num_rows:
            if not self._buffered:
                self._oldest = time.monotonic()
            take = min(table.num_rows, self.shard_rows - self._buffered)
            self._buffer.append(table.slice(0, take))
            self._buffered += take
            table = table.slice(take)
            if self._buffered >= self.shard_rows:
                self._flush()
        if self._buffered and self.flush_s is not None and time.monotonic() - self._oldest >= self.flush_s:
            self._flush()

    def close(self) -> None:
        if self._buffered:
            self._flush()

    def _flush(self) -> None:
        table = pa.concat_tables(self._buffer, promote_options="permissive").combine_chunks()
        path = self.dir / f"part-{self.next_index:05d}.parquet"
        if self.check is not None:
            self.check()
        write_shard(path, table)
        self.paths.append(path)
        self.rows_written += table.num_rows
        self.next_index += 1
        self._buffer, self._buffered = [], 0
        self._oldest = None


def manifest_path(shard: Location) -> Location:
    return shard.with_name(shard.name.replace(".parquet", ".manifest.json"))


def write_shard(path: Location, table: pa.Table) -> None:
    """The Parquet file, atomically (`storage.write_table`); then its manifest, which makes it finished."""
    storage.write_table(path, table)
    write_json(manifest_path(path), {"shard": path.name, "rows": table.num_rows,
                                     "row_ids": table.column(ROW_ID).to_pylist()})


def write_json(path: Location, data: dict) -> None:
    """Write JSON atomically (a temporary name and a rename, or one upload): readers see the old
    file or the new one."""
    storage.write_atomic(path, json.dumps(data, indent=1, default=str).encode())
