"""Peak memory of a process tree while something runs, sampled in a background thread.

Two measures. Resident set sizes summed over the processes (as `serve.process_memory` explains)
are cheap, sampled every second, and overstate: a page that several processes of the tree map
(libraries, the model file, Ray's object store) counts once per process. Unique and proportional
set sizes (USS, PSS) do not: USS counts the pages only one process maps, PSS splits every shared
page among the processes that map it, so the PSS of a tree is its fair share of the machine's
memory and the USS the least that stopping it would free. Reading them walks each process's page
tables (/proc/PID/smaps_rollup) under its memory lock, which slows a busy engine a little, so they
are sampled every `proportional_interval_s` (5 s) and once more at the end.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Dict, Iterable, Optional

from serve.endpoint import process_tree_rss, process_tree_uss_pss


def tree_uss_pss(pids: Iterable[int]) -> Dict[str, int]:
    """{"uss": bytes, "pss": bytes, "processes": n} summed over the tree of `pids`."""
    return process_tree_uss_pss(pids)


class PeakMemory:
    """`with PeakMemory() as peak: ...; peak.bytes, peak.uss, peak.pss` - the peaks over the tree of
    this process (unless `include_self=False`) and of `extra_pids`."""

    def __init__(self, extra_pids: Iterable[int] = (), interval_s: float = 1.0, include_self: bool = True,
                 proportional_interval_s: Optional[float] = 5.0):
        self.pids = [*([os.getpid()] if include_self else []), *extra_pids]
        self.interval_s = interval_s
        self.proportional_interval_s = proportional_interval_s
        self.bytes = 0  # peak of the summed resident set sizes
        self.uss = 0
        self.pss = 0
        self._last_proportional = float("-inf")
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def __enter__(self) -> "PeakMemory":
        self.sample()
        self._thread = threading.Thread(target=self._run, name="peak-memory", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(30)
        self.sample(proportional=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def sample(self, proportional: Optional[bool] = None) -> int:
        total = process_tree_rss(self.pids)
        self.bytes = max(self.bytes, total)
        now = time.monotonic()
        if proportional is None:
            proportional = (self.proportional_interval_s is not None
                            and now - self._last_proportional >= self.proportional_interval_s)
        if proportional:
            self._last_proportional = now
            m = tree_uss_pss(self.pids)
            self.uss, self.pss = max(self.uss, m["uss"]), max(self.pss, m["pss"])
        return total

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)

    def report(self) -> Dict[str, float]:
        """The peaks in MiB, as the bench reports them."""
        return {"peak_uss_mib": round(self.uss / 2**20, 1), "peak_pss_mib": round(self.pss / 2**20, 1),
                "peak_rss_sum_mib": self.mib}
