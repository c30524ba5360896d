"""W&B lineage: each job is a run that uses a dataset and a judge model and produces scores.

Offline by default: no account is needed, the run is written under `<output.dir>/wandb/` and
can be uploaded later with `wandb sync`. Artifacts record where every number came from:

    dataset  the input files, by content (md5 per file from W&B, sha256 in the metadata)
    model    the judge: model id, endpoint, and per pool member the weights' sha256 as the
             replicas reported them (a reference, never the weights themselves)
    scores   the Parquet shards, their manifests and summary.json, logged by the run
    agreement  `agree`'s agreement.json/.md and report.html, naming the score dirs (their
             summary.json, their `scores-<dir>` artifact) and data files it read

On object storage (output.dir or dataset.path an s3:// URI) the references are the objects' URIs:
W&B records each object's ETag (with boto3, at the endpoint of AWS_ENDPOINT_URL, as the job
wrote them; W&B's own AWS_S3_ENDPOINT_URL wins where set), and the W&B run itself, which must be
on local disk, goes to W&B's own place ($WANDB_DIR, else ./wandb).

Every file is added by reference, so nothing is copied to W&B's staging area outside the
output dir and the offline run dir can be moved and synced elsewhere. W&B cannot record an
artifact as a run's input offline (`use_artifact` needs its server), so an offline run names its
inputs, with their digests and sha256s, in its config (`inputs`) and in the scores artifact's
metadata; an online run also declares them with `use_artifact`, and W&B draws the graph.

Tracking never decides whether a job succeeds: if W&B fails, the job warns and goes on.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Sequence

from jobs.config import JobConfig, to_dict
from jobs.data import storage
from jobs.data.shards import manifest_path
from jobs.data.storage import Location
from jobs.judge.modes import get_mode
from jobs.redact import redact

log = logging.getLogger(__name__)

SAMPLE_ROWS = 50


def run_dir(out_dir: Location) -> str:
    """Where the W&B run goes: the output dir, or with output on object storage $WANDB_DIR, else
    the working directory. Named here, not left to W&B: its settings are read once per process,
    so a WANDB_DIR set after an earlier run would be ignored."""
    if storage.is_remote(out_dir):
        return os.environ.get("WANDB_DIR") or os.getcwd()
    return str(out_dir)


def sha256_of(path: Location) -> str:
    """A dataset file's sha256, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with storage.open_input(path) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def artifact_name(kind: str, text: str) -> str:
    """W&B artifact names allow letters, digits, '-', '_' and '.'."""
    return f"{kind}-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-.") or "unnamed")[:100]


def logged_config(cfg: JobConfig) -> dict:
    """The resolved config, without secrets (`jobs.redact`: api keys, tokens, env values, URL passwords)."""
    return redact(to_dict(cfg))


def _tracking(method):
    """No-op without a run; a W&B failure is a warning, never the job's failure."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        if not self.run:
            return None
        try:
            return method(self, *args, **kwargs)
        except Exception as e:  # noqa: BLE001 - lineage must not cost the evaluation
            log.warning("W&B: %s failed: %s", method.__name__, e)
            return None

    return wrapper


class Lineage:
    """One W&B run per job; every method is a no-op when tracking is disabled or W&B failed."""

    def __init__(self, run=None):
        self.run = run
        self.inputs: Dict[str, dict] = {}  # artifact type -> name, digest and what it holds

    @classmethod
    def start(cls, cfg: JobConfig, job_type: str, out_dir: Location, name: Optional[str] = None) -> "Lineage":
        return cls.start_run(logged_config(cfg), job_type, out_dir, cfg.tracking.mode, cfg.tracking.project, name)

    @classmethod
    def start_run(cls, config: Dict[str, Any], job_type: str, out_dir: Location, mode: str = "offline",
                  project: str = "judgefleet", name: Optional[str] = None) -> "Lineage":
        """A run whose config is a plain dict (a job without a JobConfig, such as `agree`); its
        secrets are redacted here, whoever the caller."""
        if mode == "disabled":
            return cls(None)
        import wandb

        config = redact(config)

        os.environ.setdefault("WANDB_SILENT", "true")
        try:
            run = wandb.init(
                project=project, job_type=job_type, name=name, config=config,
                dir=run_dir(out_dir), mode=mode, reinit="create_new",
                # No console capture, system metrics, code or git snapshot: the job's own output stays as it is.
                # No system metadata either: it records the command line, where `key=value` overrides
                # may hold secrets that the config above has redacted.
                settings=wandb.Settings(console="off", x_disable_stats=True, save_code=False, disable_git=True,
                                        silent=True, x_disable_meta=True),
            )
        except Exception as e:  # noqa: BLE001 - lineage must not cost the evaluation
            log.warning("W&B tracking is off for this run: %s", e)
            return cls(None)
        return cls(run)

    @property
    def run_dir(self) -> Optional[str]:
        return getattr(getattr(self.run, "settings", None), "sync_dir", None) if self.run else None

    @_tracking
    def use_dataset(self, files: Sequence[Location], dataset_cfg: Dict[str, Any],
                    sha256s: Optional[Dict[str, str]] = None) -> None:
        """`sha256s`: digests already read (resolved path -> sha256), so a file is not hashed twice."""
        import wandb

        known = sha256s or {}
        described = [{"path": str(f.resolve()), "bytes": storage.size(f),
                      "sha256": known.get(str(f.resolve())) or sha256_of(f)} for f in files]
        label = files[0].stem if len(files) == 1 else files[0].parent.name
        artifact = wandb.Artifact(artifact_name("dataset", label), type="dataset",
                                  metadata={"files": described, **dataset_cfg})
        for f in files:
            artifact.add_reference(storage.uri(f), name=f.name)  # W&B records each file's md5 (an object's ETag)
        self._use(artifact, {"files": described})

    @_tracking
    def use_model(self, model: str, url: str, judges: Dict[tuple, int], specs: Iterable[dict] = ()) -> None:
        """`judges`: (member, backend, file, sha256) -> rows, as the replicas reported them."""
        import wandb

        # The URL may carry a password, and `specs` (the members' settings) keys and env values.
        url, specs = redact(url), redact(list(specs))
        members = [{"member": m, "backend": b, "file": f, "sha256": s, "rows": n}
                   for (m, b, f, s), n in sorted(judges.items(), key=lambda kv: str(kv[0]))]
        artifact = wandb.Artifact(artifact_name("judge", model), type="model",
                                  metadata={"model": model, "url": url, "members": members, "specs": specs})
        # The weights may live only on the judge's node: each member is a reference whose URI
        # carries its sha256, so other weights make another artifact digest.
        for m in members:
            uri = f"judgefleet-model://{m['member'] or 'judge'}/{Path(m['file'] or model).name}?sha256={m['sha256']}"
            artifact.add_reference(uri, name=f"{m['member'] or 'judge'}", checksum=False)
        if not members and url:  # an endpoint that does not say which weights answer: its URL and model id
            artifact.add_reference(f"{url.rstrip('/')}/models/{model}", name="endpoint", checksum=False)
        self._use(artifact, {"model": model, "url": url, "members": members})

    @_tracking
    def log_scores(self, out_dir: Location, summary: dict, shards: Sequence[Location]) -> None:
        import wandb

        metrics = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.run.summary.update(metrics)
        metric = get_mode(summary["mode"]).metric  # mean_score, or a_win_rate in relative mode
        meta = {k: summary.get(k) for k in ("rows", "scored", "rows_with_errors", "mode", metric, "parse_rate", "shards")}
        artifact = wandb.Artifact(artifact_name("scores", storage.resolved(out_dir).name), type="scores",
                                  metadata={**meta, "inputs": self.inputs})
        for shard in shards:
            for f in (shard, manifest_path(shard)):
                artifact.add_reference(storage.uri(f), name=f.name)
        artifact.add_reference(storage.uri(storage.location(out_dir) / "summary.json"), name="summary.json")
        self.run.log_artifact(artifact)
        if shards:
            self.run.log({"scored_rows": sample_table(shards[0])})

    def _use(self, artifact, described: dict) -> None:
        """Declare an input: with use_artifact online, and always in the run's config `inputs`."""
        kind = artifact.type
        self.inputs[kind] = {"name": artifact.name, "digest": artifact.manifest.digest(), **redact(described)}
        self.run.config.update({"inputs": self.inputs}, allow_val_change=True)
        if not self.run.offline:
            self.run.use_artifact(artifact)

    @_tracking
    def log_report(self, metrics: Dict[str, Any], files: Sequence[Path], kind: str, name: str) -> None:
        import wandb

        self.run.summary.update(metrics)
        artifact = wandb.Artifact(artifact_name(kind, name), type=kind)
        for f in files:
            artifact.add_reference(Path(f).resolve().as_uri(), name=Path(f).name)
        self.run.log_artifact(artifact)

    @_tracking
    def log_agreement(self, out_dir: Path, report: dict, files: Sequence[Path], score_dirs: Sequence[dict],
                      data_files: Sequence[Path]) -> None:
        """`agree`'s output: an `agreement` artifact holding its files by reference and naming what it
        read - each score dir's summary.json and the scores artifact its score run logged
        (`scores-<dir name>`), each data file by sha256. `score_dirs`: {"name", "path", "judge_model"}."""
        metrics: Dict[str, Any] = {"rows": report["rows"]}
        for p in report["pairs"]:
            for stat in ("pearson", "kappa_quadratic"):
                metrics[f"{stat}/{p['a']} vs {p['b']}"] = p["statistics"][stat]["estimate"]
        self._log_comparison("agreement", out_dir, metrics, {"rows": report["rows"], "settings": report["settings"],
                                                             "sources": [s["name"] for s in report["sources"]]},
                             files, score_dirs, data_files)

    def log_study(self, out_dir: Path, result: dict, files: Sequence[Path], score_dirs: Sequence[dict],
                  data_files: Sequence[Path]) -> None:
        """`study`'s output: a `study` artifact like `agree`'s, naming every score run it made."""
        metrics: Dict[str, Any] = {"rows": result["rows"]}
        for q in result["quality"]:
            metrics[f"pearson_original/{q['judge']}"] = q["pearson_original"]["estimate"]
            if q.get("pearson_reference"):
                metrics[f"pearson_reference/{q['judge']}"] = q["pearson_reference"]["estimate"]
        for s in result["speed"]:
            metrics[f"samples_per_s/{s['judge']}"] = s["samples_per_s"]
        self._log_comparison("study", out_dir, metrics, {"rows": result["rows"], "original": result["original"],
                                                         "judges": [q["judge"] for q in result["quality"]]},
                             files, score_dirs, data_files)

    @_tracking
    def _log_comparison(self, kind: str, out_dir: Path, metrics: Dict[str, Any], metadata: dict,
                        files: Sequence[Path], score_dirs: Sequence[dict], data_files: Sequence[Path]) -> None:
        import wandb

        read = []
        for d in score_dirs:
            path = Path(d["path"]).resolve()
            summary = path / "summary.json"
            read.append({"source": d["name"], "path": str(path), "judge_model": d.get("judge_model"),
                         "scores_artifact": artifact_name("scores", path.name),
                         "summary_json": str(summary) if summary.is_file() else None,
                         "summary_sha256": sha256_of(summary) if summary.is_file() else None})
        data = [{"path": str(Path(f).resolve()), "bytes": Path(f).stat().st_size, "sha256": sha256_of(f)}
                for f in data_files if Path(f).is_file()]
        self.inputs.update({"scores": read, "data_files": data})
        self.run.config.update({"inputs": self.inputs}, allow_val_change=True)
        if not self.run.offline:  # W&B draws score runs -> this run, where those runs were synced
            for r in read:
                try:
                    self.run.use_artifact(f"{r['scores_artifact']}:latest")
                except Exception as e:  # noqa: BLE001 - an unsynced score run is no reason to lose this one
                    log.warning("W&B: %s is not in project %s (sync its score run first): %s",
                                r["scores_artifact"], self.run.project, e)
        self.run.summary.update(metrics)
        artifact = wandb.Artifact(artifact_name(kind, Path(out_dir).resolve().name), type=kind,
                                  metadata={**metadata, "inputs": self.inputs})
        for f in files:
            artifact.add_reference(Path(f).resolve().as_uri(), name=Path(f).name)
        self.run.log_artifact(artifact)

    @_tracking
    def finish(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


def sample_table(shard: Location, rows: int = SAMPLE_ROWS):
    """The first rows of a shard as a W&B table: what the judge said, next to the row."""
    import wandb

    wanted = ["row_id", "score", "score_expected", "feedbacks", "errors", "judge_member"]
    table = storage.read_table(shard, columns=[c for c in wanted if c in storage.read_schema(shard).names]).slice(0, rows)
    out = wandb.Table(columns=["row_id", "score", "score_expected", "feedback", "errors", "judge_member"])
    for r in table.to_pylist():
        feedback = next((f for f in (r.get("feedbacks") or []) if f), None)
        out.add_data(r["row_id"], r.get("score"), r.get("score_expected"), feedback,
                     "; ".join(r.get("errors") or []) or None, r.get("judge_member"))
    return out
