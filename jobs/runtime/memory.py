"""Peak memory of a process tree while something runs, sampled in a background thread (resident
set sizes summed over the processes, as `serve.process_memory` explains)."""

from __future__ import annotations

import os
import threading
from typing import Iterable, Optional

from serve.endpoint import process_tree_rss


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
        total = process_tree_rss([os.getpid(), *self.extra_pids])
        self.bytes = max(self.bytes, total)
        return total

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)
