"""`judgefleet agree SOURCE...`: how far judges agree with one another, with reference scores and
with themselves, each number with a 95% bootstrap interval. No Ray: it reads finished outputs."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Tuple

from jobs.agreement import compare, load, show, write
from jobs.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AgreeSettings:
    sources: Tuple[str, ...]
    refs: Tuple[str, ...] = field(default_factory=tuple)
    group: Optional[str] = None
    out: str = "runs/agreement"
    id_field: Optional[str] = None
    seed: int = 0
    resamples: int = 2000


def run(settings: AgreeSettings, console=None) -> dict:
    """Read the sources, compare them, write agreement.json + agreement.md, print the tables."""
    started = time.perf_counter()
    if settings.resamples < 20:
        raise ConfigError(f"--resamples {settings.resamples}: too few for a 95% interval; use 1000 or more (default 2000)")
    joined = load(settings.sources, settings.refs, settings.group, settings.id_field)
    log.info("joined %d rows of %d sources", len(joined.row_ids), len(joined.sources))
    report = {"settings": {**asdict(settings), "confidence": 0.95}}
    report.update(compare(joined, settings.resamples, settings.seed))
    report["wall_s"] = round(time.perf_counter() - started, 3)
    files = write(Path(settings.out).expanduser(), report)
    show(report, files, console)
    return report
