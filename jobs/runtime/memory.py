"""Peak memory of a process tree while something runs, sampled in a background thread.

Resident set sizes, summed over the processes: pages several processes share (libraries, Ray's
object store) count once per process, so the sum overstates a Ray cluster somewhat. Proportional
set sizes would not, but reading them walks each process's page tables under its memory lock,
which measurably slowed the judge replica being measured.
"""

from __future__ import annotations

import threading
from typing import Iterable, Optional

import psutil


class PeakMemory:
    """`with PeakMemory() as peak: ...; peak.bytes` - this process, its descendants, and `extra` pids."""

    def __init__(self, extra_pids: Iterable[int] = (), interval_s: float = 1.0):
        self.extra_pids = list(extra_pids)
        self.interval_s = interval_s
        self.bytes = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self) -> int:
        total = 0
        me = psutil.Process()
        procs = [me, *me.children(recursive=True)]
        for pid in self.extra_pids:
            try:
                extra = psutil.Process(pid)
                procs += [extra, *extra.children(recursive=True)]
            except psutil.NoSuchProcess:
                continue
        for proc in {p.pid: p for p in procs}.values():
            try:
                total += proc.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        self.bytes = max(self.bytes, total)
        return total

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)
