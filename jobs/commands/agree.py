"""`judgefleet agree SOURCE...`: how far judges agree with one another, with reference scores and
with themselves, each number with a 95% bootstrap interval. No Ray: it reads finished outputs.
Score dirs of A/B verdicts (relative, pairwise_absolute) are measured against `--label`
(jobs.agreement.pairwise); the others as scores.
It writes agreement.json/.md and report.html, and is a W&B run (offline by default) whose
`agreement` artifact names the score runs it read."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple

from jobs.agreement import compare, load, show, write
from jobs.agreement.figures import figure_data, judge_cards, pairwise_cards
from jobs.agreement.pairwise import compare_pairwise, is_pairwise_dir, load_pairwise
from jobs.agreement.sources import _parse_spec
from jobs.agreement.sources import JUDGE
from jobs.config import TRACKING_MODES, TrackingConfig
from jobs.errors import ConfigError
from jobs.runtime.lineage import Lineage

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
    tracking: str = "offline"
    label: Optional[str] = None  # pairwise dirs: the column naming the better response (A/B)


def run(settings: AgreeSettings, console=None) -> dict:
    """Read the sources, compare them, write agreement.json, agreement.md and report.html, print the
    tables, and record the W&B run."""
    from rich.console import Console

    started = time.perf_counter()
    if settings.resamples < 20:
        raise ConfigError(f"--resamples {settings.resamples}: too few for a 95% interval; use 1000 or more (default 2000)")
    if settings.tracking not in TRACKING_MODES:
        raise ConfigError(f"--tracking {settings.tracking}: use one of {', '.join(TRACKING_MODES)}")
    if settings.tracking == "online" and not os.environ.get("WANDB_API_KEY"):
        raise ConfigError("--tracking online needs $WANDB_API_KEY; set it, or use --tracking offline and `wandb sync` later")
    pairwise = [s for s in settings.sources if is_pairwise_dir(_parse_spec(s)[1])]
    scalar = [s for s in settings.sources if s not in pairwise]
    report = {"settings": {**asdict(settings), "confidence": 0.95}}
    if pairwise:
        pair_sources = load_pairwise(settings.sources, settings.label, settings.group, settings.id_field)
        report["pairwise"] = compare_pairwise(pair_sources, settings.label, settings.group, settings.resamples,
                                              settings.seed)
        report["pairwise_cards"] = pairwise_cards(report)
    elif settings.label:
        raise ConfigError(f"--label {settings.label}: no SOURCE is a score dir of A/B verdicts (judge.mode relative "
                          "or pairwise_absolute); --label measures those")
    if not pairwise or settings.refs or sum(_parse_spec(s)[2] for s in scalar) >= 2:
        joined = load(scalar, settings.refs, settings.group, settings.id_field)
        log.info("joined %d rows of %d sources", len(joined.row_ids), len(joined.sources))
        report.update(compare(joined, settings.resamples, settings.seed))
        report["figures"] = figure_data(joined, report)
        report["judge_cards"] = judge_cards(report)
    else:  # pairwise dirs alone: no scores to correlate
        report.update({"sources": [], "rows": report["pairwise"]["rows"], "clusters": None, "pairs": [],
                       "versus_reference": [], "self_consistency": {"samples": [], "run_to_run": []}, "notes": [],
                       "figures": {}, "judge_cards": []})
    report["wall_s"] = round(time.perf_counter() - started, 3)
    out = Path(settings.out).expanduser()
    files = write(out, report)
    console = console or Console()
    show(report, files, console)
    lineage = Lineage.start_run(asdict(settings), "agree", out, settings.tracking, TrackingConfig().project)
    failed = True
    try:
        score_dirs = [{"name": s["name"], "path": s["origin"], "judge_model": s.get("judge_model")}
                      for s in report["sources"] if s["kind"] == JUDGE]
        score_dirs += [{"name": s["name"], "path": s["origin"], "judge_model": s.get("judge_model")}
                       for s in report.get("pairwise", {}).get("judges", [])]
        lineage.log_agreement(out, report, files, score_dirs, data_files(settings.sources))
        failed = False
    finally:
        lineage.finish(failed)
    if lineage.run_dir:
        console.print(f"lineage: W&B {settings.tracking} run in {lineage.run_dir}"
                      + (f"; upload it with: wandb sync {lineage.run_dir}" if settings.tracking == "offline" else ""),
                      soft_wrap=True)
    return report


def data_files(specs: Tuple[str, ...]) -> List[Path]:
    """The data files among the SOURCE arguments (PATH or NAME=PATH), as `load` read them."""
    out = []
    for spec in specs:
        raw = spec if Path(spec).expanduser().exists() or "=" not in spec else spec.split("=", 1)[1]
        path = Path(raw).expanduser()
        if path.is_file():
            out.append(path)
    return out
