"""What the input files held when an output dir was scored, so a resume never mixes two datasets.

Each file's size and the sha256 of every byte: sound (any change is seen, even one that keeps
size and modification time) at the cost of one more read of the data per run, at disk or
sha256 speed (hundreds of MB/s). Size and mtime alone would be cheap but miss an edit in place
and see a copy (`cp`, a checkout) as a change.

One change is not a change of content: lines appended to a .jsonl or .csv file whose old content
ended with a line break. The rows already scored are all still there, with the same ids, and the
re-run scores the new ones (a growing log of model outputs, judged as it grows).
"""

from __future__ import annotations

import hashlib
from typing import Dict, List, Optional, Sequence

from jobs.data import storage
from jobs.data.records import file_format
from jobs.data.storage import Location

_BLOCK = 1 << 20
APPENDABLE = ("jsonl", "csv")


def digest_files(files: Sequence[Location], before: Sequence[dict] = ()) -> List[dict]:
    """[{"path", "size", "sha256"}] per file. Where `before` has a smaller size for the same path,
    also "prefix_sha256" (of the first `size` bytes, then) and "prefix_ends_line"."""
    sizes = {e["path"]: e["size"] for e in before}
    out = []
    for f in files:
        path = str(storage.resolved(f))
        entry = {"path": path, "size": 0, "sha256": ""}
        cut = sizes.get(path)
        h = hashlib.sha256()
        read = 0
        if cut == 0:  # the file was empty then: anything after is appended
            entry["prefix_sha256"], entry["prefix_ends_line"] = h.hexdigest(), True
        with storage.open_input(f) as fh:
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    break
                if cut is not None and read < cut <= read + len(block):  # the old size falls in this block
                    head = block[: cut - read]
                    prefix = h.copy()
                    prefix.update(head)
                    entry["prefix_sha256"] = prefix.hexdigest()
                    entry["prefix_ends_line"] = head.endswith(b"\n")
                h.update(block)
                read += len(block)
        entry["size"], entry["sha256"] = read, h.hexdigest()
        if cut is not None and cut >= read:
            entry.pop("prefix_sha256", None)
            entry.pop("prefix_ends_line", None)
        out.append(entry)
    return out


def changes(before: Sequence[dict], now: Sequence[dict], fmt: Optional[str]) -> List[str]:
    """What changed between two digests, one phrase per file; appended lines are no change."""
    old: Dict[str, dict] = {e["path"]: e for e in before}
    new: Dict[str, dict] = {e["path"]: e for e in now}
    out = [f"'{p}' was removed" for p in old if p not in new]
    out += [f"'{p}' was added" for p in new if p not in old]
    for path, was in old.items():
        cur = new.get(path)
        if cur is None or (cur["size"], cur["sha256"]) == (was["size"], was["sha256"]):
            continue
        appended = (cur["size"] > was["size"] and cur.get("prefix_sha256") == was["sha256"]
                    and cur.get("prefix_ends_line") and file_format(storage.location(path), fmt) in APPENDABLE)
        if not appended:
            out.append(f"'{path}' changed (size {was['size']} -> {cur['size']} bytes, "
                       f"sha256 {was['sha256'][:12]}... -> {cur['sha256'][:12]}...)")
    return out


def stored(entries: Sequence[dict]) -> List[dict]:
    """The digest as job.json keeps it (without this run's prefix hashes)."""
    return [{"path": e["path"], "size": e["size"], "sha256": e["sha256"]} for e in entries]
