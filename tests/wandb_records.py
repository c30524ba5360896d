"""Read an offline W&B run's transaction log (`run-*.wandb`) back into protobuf records.

wandb ships no reader for it. The file is a ":W&B" header, then LevelDB-style log records in
32 KiB blocks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last), each
holding a serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

BLOCK = 32768
HEADER = 7  # ":W&B", a 2-byte magic, a version byte; and the size of each record's header


def read_records(path: Path) -> List["object"]:
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    payloads, partial, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length = int.from_bytes(data[pos + 4:pos + 6], "little")
        kind = data[pos + 6]
        chunk = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == 1:
            payloads.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            payloads.append(partial + chunk)
            partial = b""
        elif kind == 0 and length == 0:
            pos += left - HEADER  # zero padding to the end of the block
    return [wandb_internal_pb2.Record.FromString(p) for p in payloads]


def offline_run_file(out_dir: Path, wait_s: float = 30.0) -> Path:
    """The last offline run's transaction log, once complete. `run.finish()` returns before
    wandb-core has written it out: its writer buffers the log (under 32 KiB: all of it) and closes
    it ~0.1 s later, more on a busy machine - read at once, it can hold nothing but its header. The
    log is complete when it ends with the `exit` record."""
    files = sorted(Path(out_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {out_dir}/wandb"
    deadline = time.monotonic() + wait_s
    while not any(r.WhichOneof("record_type") == "exit" for r in read_records(files[-1])):
        assert time.monotonic() < deadline, f"{files[-1]} has no exit record after {wait_s:.0f} s"
        time.sleep(0.1)
    return files[-1]
