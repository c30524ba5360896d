"""Resident memory of a process and its children: what a replica reports of itself in its engine
statistics (GET /pools), and what `judgefleet bench` samples of the processes it starts.

Resident set sizes are summed over the processes: pages several processes share (libraries, Ray's
object store) count once per process, so the sum overstates a little. Proportional set sizes would
not, but reading them walks each process's page tables under its memory lock, which measurably
slowed the judge replica being measured: replicas report RSS, and `tree_uss_pss` is for samplers
that can afford it now and then (`judgefleet bench`, every few seconds).
"""

from __future__ import annotations

import os
import resource
from typing import Dict, Iterable, List

import psutil

_peak_seen = 0  # the largest tree total this process has reported


def tree_processes(pids: Iterable[int]) -> List[psutil.Process]:
    """The processes `pids` and all their descendants, each once (those that are gone are skipped)."""
    procs: Dict[int, psutil.Process] = {}
    for pid in pids:
        try:
            root = psutil.Process(pid)
            for proc in (root, *root.children(recursive=True)):
                procs[proc.pid] = proc
        except psutil.NoSuchProcess:
            continue
    return list(procs.values())


def tree_rss(pids: Iterable[int]) -> int:
    """Bytes resident in the given processes and all their descendants, each process counted once."""
    total = 0
    for proc in tree_processes(pids):
        try:
            total += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total


def tree_uss_pss(pids: Iterable[int]) -> Dict[str, int]:
    """{"uss": bytes, "pss": bytes, "processes": n} summed over the tree of `pids`: no shared page
    counted twice (psutil's `memory_full_info()`). Slow on a busy process: see the module's note."""
    uss = pss = n = 0
    for proc in tree_processes(pids):
        try:
            info = proc.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        uss += info.uss
        pss += getattr(info, "pss", info.uss)  # PSS is Linux-only; elsewhere USS stands in
        n += 1
    return {"uss": uss, "pss": pss, "processes": n}


def replica_memory() -> Dict[str, int]:
    """This process tree's resident bytes now, and the peak: the kernel's high-water mark of this
    process (exact, also while loading weights) or the largest tree total reported so far (its
    engine's child processes, as vLLM runs them), whichever is larger."""
    global _peak_seen
    now = tree_rss([os.getpid()])
    _peak_seen = max(_peak_seen, now)
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"rss_bytes": now, "peak_rss_bytes": max(_peak_seen, own_peak)}
