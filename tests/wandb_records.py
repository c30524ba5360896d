"""Read an offline W&B run's transaction log (`run-*.wandb`) back into protobuf records.

wandb ships no reader for it. The file is a ":W&B" header, then LevelDB-style log records in
32 KiB blocks (4-byte checksum, 2-byte length, 1-byte type: full, first, middle, last), each
holding a serialized `wandb_internal_pb2.Record`.
"""

from __future__ import annotations

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


def offline_run_file(out_dir: Path) -> Path:
    files = sorted(Path(out_dir).glob("wandb/offline-run-*/run-*.wandb"))
    assert files, f"no offline W&B run under {out_dir}/wandb"
    return files[-1]
