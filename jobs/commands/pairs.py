"""`judgefleet pairs SOURCE --chosen COL --rejected COL --out FILE.jsonl`: A/B rows for relative
grading from two whole Prometheus absolute prompts per row (as in hhh_alignment_eval.json).

Relative grading in both orders (`judge.swap`) renders each order from columns, so a dataset of
whole prompts is split back into them (jobs.data.prometheus_sections) and its two responses placed
as A and B. Which position holds the chosen response (`label`) comes from a seeded hash of the row's
content: about half the rows are A and half B, so a judge that always names one position scores
about 0.5, not 1.0, and the same command writes the same file. No Ray, no judge.

Every input row becomes one output row, in order, with `index` (its position in SOURCE) and every
input column but the two prompt columns (one named like an output column is kept as
`input_<name>`). A row that cannot be split (unreadable, a prompt missing or not in the layout, two
prompts that do not share their instruction, rubric or reference answer) is written with `error`
set and the other output columns null, counted and reported: `judgefleet score` then gives it a
`bad_row` error without asking the judge, so scored rows still equal input rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

from jobs.data.datasource import FORMATS, content_hash, iter_records
from jobs.data.prometheus_sections import parse_absolute_prompt, same_task
from jobs.errors import DatasetError, OutputError

LABEL, INDEX, ERROR = "label", "index", "error"
# Every output row has these keys (a reader that types columns from the first row keeps them all).
COLUMNS = (INDEX, LABEL, "instruction", "response_a", "response_b", "reference_answer", "rubric", ERROR)


@dataclass(frozen=True)
class PairsSettings:
    source: str  # a .json, .jsonl, .csv or .parquet file
    chosen: str  # the column of the chosen response's whole prompt
    rejected: str  # the column of the rejected response's whole prompt
    out: str  # the JSONL file to write
    seed: int = 0  # changes which rows get the chosen response as A


def label_for(record: Dict[str, Any], seed: int) -> str:
    """"A" or "B", the position of the chosen response: a hash of (seed, the row's content)."""
    digest = hashlib.sha256(f"{seed}\0{content_hash(record)}".encode()).digest()
    return "A" if digest[0] & 1 == 0 else "B"


def split_row(record: Dict[str, Any], chosen: str, rejected: str, seed: int) -> Dict[str, Any]:
    """The output columns of one readable row (ERROR set, and the rest None, where it cannot be split)."""
    parsed = {}
    for column in (chosen, rejected):
        value = record.get(column)
        if value is None:
            return _error(f"{column} is missing")
        try:
            parsed[column] = parse_absolute_prompt(value)
        except ValueError as e:
            return _error(f"{column}: {e}")
    differs = same_task(parsed[chosen], parsed[rejected])
    if differs:
        return _error(f"{chosen} and {rejected} do not share their {differs.replace('_', ' ')}; a pair compares two "
                      "responses to one task")
    label = label_for(record, seed)
    good, bad = parsed[chosen], parsed[rejected]
    a, b = (good, bad) if label == "A" else (bad, good)
    return {LABEL: label, "instruction": good["instruction"], "response_a": a["response"], "response_b": b["response"],
            "reference_answer": good["reference_answer"], "rubric": good["rubric"], ERROR: None}


def _error(reason: str) -> Dict[str, Any]:
    return {**{k: None for k in COLUMNS if k != INDEX}, ERROR: reason}


def run(settings: PairsSettings, console=None) -> dict:
    """Write settings.out (one row per SOURCE row), print the summary line; the counts."""
    from rich.console import Console

    console = console or Console()
    source = Path(settings.source).expanduser()
    if not source.is_file():
        raise DatasetError(f"SOURCE '{settings.source}' is not a file; give a .json, .jsonl, .csv or .parquet file")
    if source.suffix.lower() not in FORMATS:
        raise DatasetError(f"SOURCE '{settings.source}': cannot tell its format from '{source.suffix}'; "
                           "name a .json, .jsonl, .csv or .parquet file")
    if settings.chosen == settings.rejected:
        raise DatasetError(f"--chosen and --rejected are both '{settings.chosen}'; name the two prompt columns")
    out = Path(settings.out).expanduser()
    tmp = out.with_name(out.name + ".tmp")
    counts = {"rows": 0, "pairs": 0, "A": 0, "B": 0, "errors": 0}
    first_error: Optional[str] = None
    checked = False
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "w", encoding="utf-8") as f:
            for index, (record, read_error) in enumerate(iter_records([source])):
                if record is not None and not checked:
                    _check_columns(record, settings)
                    checked = True
                row = split_row(record, settings.chosen, settings.rejected, settings.seed) if record is not None \
                    else _error(read_error)
                row[INDEX] = index
                counts["rows"] += 1
                if row[ERROR]:
                    counts["errors"] += 1
                    first_error = first_error or f"row {index}: {row[ERROR]}"
                else:
                    counts["pairs"] += 1
                    counts[row[LABEL]] += 1
                f.write(json.dumps(_with_inputs(row, record, settings), ensure_ascii=False, default=str) + "\n")
        os.replace(tmp, out)
    except OSError as e:
        raise OutputError(f"--out: cannot write '{out}' ({e.strerror}); choose a writable path") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    result = {**counts, "first_error": first_error, "out": str(out), "seed": settings.seed}
    show(result, console)
    return result


def _check_columns(record: Dict[str, Any], settings: PairsSettings) -> None:
    """The first readable row must have both prompt columns (a typo fails the command, not each row)."""
    for option, column in (("--chosen", settings.chosen), ("--rejected", settings.rejected)):
        if column not in record:
            raise DatasetError(f"{option} {column}: SOURCE has no column '{column}'; its columns are "
                               + ", ".join(record))


def _with_inputs(row: Dict[str, Any], record: Optional[Dict[str, Any]], settings: PairsSettings) -> Dict[str, Any]:
    """The output columns, then every input column but the two prompts (`input_<name>` on a clash)."""
    out = {k: row[k] for k in COLUMNS}
    for k, v in (record or {}).items():
        if k not in (settings.chosen, settings.rejected):
            out[f"input_{k}" if k in COLUMNS else k] = v
    return out


def show(result: dict, console) -> None:
    balance = f"A {result['A']}, B {result['B']}"
    if result["pairs"]:
        balance += f" ({result['A'] / result['pairs']:.0%} A)"
    console.print(f"pairs: {result['rows']} rows -> {result['pairs']} pairs (label {balance}), {result['errors']} "
                  f"errors -> {result['out']}", markup=False, highlight=False, soft_wrap=True)
    if result["errors"]:
        console.print(f"{result['errors']} rows could not be split; they are written with `error` set (judgefleet score "
                      f"gives them a bad_row error). First: {result['first_error']}",
                      style="yellow", markup=False, highlight=False, soft_wrap=True)
