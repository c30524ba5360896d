"""Resident memory of a process and its children: what a replica reports of itself in its engine
statistics (GET /pools), and what `judgefleet bench` samples of the processes it starts.

Resident set sizes are summed over the processes: pages several processes share (libraries, Ray's
object store) count once per process, so the sum overstates a little. Proportional set sizes would
not, but reading them walks each process's page tables under its memory lock, which measurably
slowed the judge replica being measured.
"""

from __future__ import annotations

import os
import resource
from typing import Dict, Iterable

import psutil

_peak_seen = 0  # the largest tree total this process has reported


def tree_rss(pids: Iterable[int]) -> int:
    """Bytes resident in the given processes and all their descendants, each process counted once."""
    procs = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    total = 0
    for proc in procs.values():
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def replica_memory() -> Dict[str, int]:
    """This process tree's resident bytes now, and the peak: the kernel's high-water mark of this
    process (exact, also while loading weights) or the largest tree total reported so far (its
    engine's child processes, as vLLM runs them), whichever is larger."""
    global _peak_seen
    now = tree_rss([os.getpid()])
    _peak_seen = max(_peak_seen, now)
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"rss_bytes": now, "peak_rss_bytes": max(_peak_seen, own_peak)}
