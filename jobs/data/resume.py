"""What an output dir already holds, so that a re-run scores only the rest.

A shard is finished when its manifest exists: the manifest is written after the Parquet file is
renamed into place. Anything else in scores/ (temporary files, a Parquet file without a
manifest, a manifest whose shard is missing) is what a killed run left half done; it is removed
and its rows are scored again.

`job.json` records the settings that decide a verdict and a digest of the input files (`digest`).
Scoring the rest of a dataset with other settings, with other weights behind the same model name,
or from input files whose content changed, would mix two judges or two datasets in one output,
so a re-run that differs is refused; `--restart` starts over instead. So is one whose input
columns would be typed otherwise than in the finished shards (`columns`): shards share one schema.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Iterable, List, Optional, Sequence, Set

import pyarrow as pa
import pyarrow.compute as pc

from jobs.config import JobConfig, swap_of, to_dict
from jobs.data import digest, storage
from jobs.data.columns import InputColumns, mismatches
from jobs.data.datasource import ROW_ID
from jobs.errors import ConfigError, JudgefleetError
from jobs.data.shards import manifest_path, write_json, write_shard
from jobs.data.storage import Location
from jobs.redact import redact

log = logging.getLogger(__name__)

JOB_FILE = "job.json"
# Settings that do not change a verdict (speed, placement, where things go) may differ between runs.
_VERDICT_SECTIONS = ("judge", "dataset", "sampling")
_NOT_VERDICT = {"judge.api_key", "judge.timeout_s", "judge.max_retries", "judge.max_in_flight", "judge.clients",
                "dataset.limit"}
_MODEL_KEYS = ("id", "name", "engine", "model", "context_length", "max_candidates", "seed", "engine_kwargs")


class JudgeChangedError(JudgefleetError):
    """The judge answering now is not the one that scored the finished shards."""


@dataclass
class Finished:
    """The finished shards of an output dir."""

    shards: List[Location] = field(default_factory=list)
    row_ids: Set[str] = field(default_factory=set)
    rows: int = 0
    next_index: int = 0
    # The input files' sha256 as `prepare` read them (resolved path -> digest), for the lineage.
    input_sha256: Dict[str, str] = field(default_factory=dict)


_ADDED_DEFAULTS = {"judge.swap": False, "dataset.chosen_field": "chosen", "dataset.rejected_field": "rejected",
                   "dataset.rejected_prompt_field": None}


def fingerprint(cfg: JobConfig) -> Dict[str, object]:
    """The settings that decide a verdict, flattened to `section.key` -> value."""
    raw = to_dict(cfg)
    flat: Dict[str, object] = {}
    for section in _VERDICT_SECTIONS:
        for key, value in raw[section].items():
            name = f"{section}.{key}"
            if name not in _NOT_VERDICT:
                flat[name] = value
    flat["dataset.path"] = str(storage.resolved(storage.location(cfg.dataset.path, "dataset.path")))
    # judge.swap as it applies (null means swapped in relative mode); left out where false, and the
    # pairwise_absolute keys where at their defaults, so outputs made before they existed resume.
    flat["judge.swap"] = swap_of(cfg)
    for key, default in _ADDED_DEFAULTS.items():
        if flat.get(key) == default:
            del flat[key]
    if cfg.judge.url is None:  # the route deployed here: which weights each member loads
        for i, model in enumerate(raw["serve"]["models"]):
            if model["id"] == cfg.judge.model:
                for key in _MODEL_KEYS:
                    flat[f"serve.models.{i}.{key}"] = model[key]
    # job.json is written next to the scores: no credentials in it (a URL's password, engine_kwargs'
    # keys). They decide no verdict, so a rotated key or password still resumes the output.
    return redact(flat)


def prepare(out_dir: Location, cfg: JobConfig, restart: bool, files: Sequence[Location] = (),
            columns: Optional[InputColumns] = None) -> Finished:
    """Clear the output dir (restart), or find its finished shards and check they came from this
    config, these input `files` (unchanged, or with lines appended) and these input `columns`."""
    scores = out_dir / "scores"
    job_file = out_dir / JOB_FILE
    if restart:
        storage.clear_dir(scores)
        for name in (JOB_FILE, "summary.json"):
            storage.delete(out_dir / name)
    finished = scan(scores)
    now = fingerprint(cfg)
    if finished.shards:
        if not storage.is_file(job_file):
            raise ConfigError(
                f"output.dir '{out_dir}' holds {len(finished.shards)} scored shards but no {JOB_FILE} saying what "
                "produced them; re-run with --restart to score from scratch, or choose another output.dir"
            )
        before = redact(_read_json(job_file).get("fingerprint", {}))  # job.json of older versions held them
        changed = [k for k in sorted(set(before) | set(now)) if before.get(k) != now.get(k)]
        if changed:
            shown = "; ".join(f"{k}: {_short(before.get(k))} -> {_short(now.get(k))}" for k in changed[:4])
            more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
            raise ConfigError(
                f"output.dir '{out_dir}' holds {finished.rows} rows scored with other settings ({shown}{more}); "
                "re-run with --restart to score everything again with these, or choose another output.dir"
            )
    earlier = _read_json(job_file).get("inputs") if finished.shards else None
    inputs = digest.digest_files(files, earlier or ())
    finished.input_sha256 = {e["path"]: e["sha256"] for e in inputs}
    if earlier is not None:  # job.json of older versions has no digest: nothing to compare
        changed = digest.changes(earlier, inputs, cfg.dataset.format)
        if changed:
            more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
            raise ConfigError(
                f"dataset file {changed[0]}{more} since output.dir '{out_dir}' was scored from it; its "
                f"{finished.rows} finished rows were judged on the old content. Re-run with --restart to score "
                "the dataset as it is now, or choose another output.dir"
            )
    if columns is not None:
        check_shard_columns(finished, columns, out_dir)
    record = {"fingerprint": now, "inputs": digest.stored(inputs), "updated": datetime.now(timezone.utc).isoformat()}
    if columns is not None:
        record["columns"] = columns.describe()
    write_json(job_file, record)
    return finished


def check_shard_columns(finished: Finished, columns: InputColumns, out_dir: Location) -> None:
    """Refuse to add shards whose input columns are typed otherwise than the finished ones'."""
    for shard in finished.shards:
        differ = mismatches(columns, storage.read_schema(shard))
        if differ:
            more = f" and {len(differ) - 2} more" if len(differ) > 2 else ""
            raise ConfigError(
                f"output.dir '{out_dir}': the input columns read now differ from those in {shard.name} "
                f"({'; '.join(differ[:2])}{more}), so new shards could not be read with it; re-run with --restart "
                "to score everything again, or choose another output.dir"
            )


def scan(scores: Location) -> Finished:
    """Finished shards (manifest + Parquet with the manifest's row count); remove what is half written."""
    finished = Finished()
    present = storage.list_dir(scores)
    kept: Set[str] = set()
    for manifest in sorted(p for p in present if fnmatch.fnmatchcase(p.name, "part-*.manifest.json")):
        shard = scores / manifest.name.replace(".manifest.json", ".parquet")
        try:
            meta = storage.read_json(manifest)
            ok = meta["rows"] == storage.parquet_file(shard).metadata.num_rows == len(meta["row_ids"])
        except (OSError, ValueError, KeyError, TypeError, pa.ArrowException):
            ok = False
        if not ok:
            log.warning("shard %s is incomplete; its rows will be scored again", shard.name)
            continue
        kept.update((manifest.name, shard.name))
        finished.shards.append(shard)
        finished.row_ids.update(meta["row_ids"])
        finished.rows += meta["rows"]
        finished.next_index = max(finished.next_index, int(shard.stem.split("-")[1]) + 1)
    for path in present:
        if path.name not in kept and (path.name.startswith((".part-", "part-"))):
            storage.delete(path)
    return finished


def drop_errored(finished: Finished) -> int:
    """Take the rows that ended with errors out of their shards, so this run judges them again.

    Each shard is rewritten without them. Its manifest goes first and comes back last: a crash in
    between leaves a shard without a manifest, which the next run scores again whole - never a
    manifest naming rows its file lacks.
    """
    dropped = 0
    for shard in list(finished.shards):
        table = storage.read_table(shard)
        if "errors" not in table.column_names or table.column("errors").null_count == table.num_rows:
            continue
        clean = pc.is_null(table.column("errors"))
        errored = table.filter(pc.invert(clean)).column(ROW_ID).to_pylist()
        storage.delete(manifest_path(shard))
        kept = table.filter(clean)
        if kept.num_rows:
            write_shard(shard, kept)
        else:
            storage.delete(shard)
            finished.shards.remove(shard)
        finished.row_ids.difference_update(errored)
        finished.rows -= len(errored)
        dropped += len(errored)
    return dropped


def weights_by_member(judges: Iterable[tuple]) -> Dict[str, Set[str]]:
    """member -> the weights' sha256s that answered, from `SummaryBuilder.judges` keys."""
    out: Dict[str, Set[str]] = {}
    for member, _backend, _file, sha in judges:
        if sha:
            out.setdefault(member or "", set()).add(sha)
    return out


def check_same_judge(before: Dict[str, Set[str]], judges: Iterable[tuple], out_dir: Location) -> None:
    """Refuse rows judged by other weights than the finished shards' under the same member."""
    for member, shas in weights_by_member(judges).items():
        known = before.get(member)
        if known and not shas <= known:
            raise JudgeChangedError(
                f"the judge changed since output.dir '{out_dir}' was scored: member '{member or '-'}' now answers with "
                f"weights {sorted(shas - known)[0][:12]}..., the finished shards with {sorted(known)[0][:12]}...; "
                "re-run with --restart to score everything with the new weights, or choose another output.dir"
            )


def _read_json(path: Location) -> dict:
    try:
        return storage.read_json(path)
    except (OSError, ValueError):
        return {}


def _short(value: Optional[object]) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
