"""`judgefleet quantize [SOURCE]`: a ladder of GGUF files, one per llama.cpp quantization type, from
a 16-bit GGUF (by default the bundled judge, expanded from its Q4_K_M). The files are made in
serve/ (it owns model files); this verb turns arguments into that call, prints the table and
writes quantize.json next to the files."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from jobs.data.shards import write_json
from jobs.errors import ConfigError, OutputError
from serve.endpoint import quantize_ladder

log = logging.getLogger(__name__)

BUNDLED_NOTE = (
    "made from the bundled judge, which exists only in Q4_K_M: its F16 'original' holds Q4_K_M's values, "
    "so each file re-quantizes those values. Q5_K_M, Q8_0 and F16 cannot be better than Q4_K_M itself; "
    "Q2_K and Q3_K_M measure loss relative to Q4_K_M, not to the real 16-bit Gemma."
)

_PER_SOURCE = ("source", "source_sha256", "made_from", "from_bundled", "parameters")  # in "source", once


@dataclass(frozen=True)
class QuantizeSettings:
    source: Optional[str] = None  # a 16-bit GGUF; None: the bundled judge
    types: Optional[Tuple[str, ...]] = None  # llama.cpp type names; None: the whole ladder (serve.quantize.LADDER)
    out: Optional[str] = None  # None: the model cache, a folder named for the source's sha256


def run(settings: QuantizeSettings, console=None) -> dict:
    """Make (or find) each file, print the table, write quantize.json beside the files."""
    from rich.console import Console

    console = console or Console()
    started = time.perf_counter()
    try:
        files = quantize_ladder(settings.source, settings.types, settings.out,
                                on_step=lambda text: console.print(text, style="dim", markup=False, soft_wrap=True))
    except ValueError as e:  # serve.quantize.QuantizeError: a source or a type the user can fix
        raise ConfigError(str(e)) from None
    report = _report(settings, files, time.perf_counter() - started)
    path = Path(files[0].path).parent / "quantize.json"
    try:
        write_json(path, report)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror}); choose a writable --out") from None
    log.info("wrote %s", path)
    show(report, path, console)
    return report


def _report(settings: QuantizeSettings, files: List, wall_s: float) -> dict:
    first = files[0]
    return {
        "settings": asdict(settings),
        "source": {"path": first.source, "sha256": first.source_sha256, "made_from": first.made_from,
                   "from_bundled": first.from_bundled, "parameters": first.parameters},
        "files": [{**{k: v for k, v in asdict(f).items() if k not in _PER_SOURCE},
                   "bits_per_weight": round(f.bits_per_weight, 3)} for f in files],
        "notes": [BUNDLED_NOTE] if first.from_bundled else [],
        "wall_s": round(wall_s, 2),
    }


HEADER = ("type", "bits/weight", "size", "sha256", "made in", "file")


def table_rows(report: dict) -> List[Tuple[str, ...]]:
    """One row per file, as HEADER says: bits/weight is file size x 8 / the source's weights."""
    rows = []
    for f in report["files"]:
        made = "there already" if f["reused"] else f"{f['seconds']:.1f} s"
        rows.append((f["type"], f"{f['bits_per_weight']:.2f}", f"{f['bytes'] / 1e6:.1f} MB", f["sha256"][:12], made,
                     Path(f["path"]).name))
    return rows


def show(report: dict, path: Path, console) -> None:
    from rich.table import Table

    src = report["source"]
    table = Table(title=f"quantization ladder of {Path(src['path']).name}: {src['made_from']}; "
                        f"{src['parameters']:,} weights; sha256 {src['sha256'][:12]}", title_justify="left")
    for name in HEADER:
        table.add_column(name, overflow="fold", justify="right" if name in ("bits/weight", "size", "made in") else "left")
    for row in table_rows(report):
        table.add_row(*row)
    console.print(table)
    console.print(f"in {path.parent}", soft_wrap=True)
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"written: {path} ({report['wall_s']:.1f} s)", soft_wrap=True)
