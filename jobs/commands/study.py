"""`judgefleet study CONFIG`: the article's quantization study as one job.

Every rung of the ladder (made or found by `judgefleet quantize`'s code) and every other judge
under serve.models is deployed once, together, on one route. Each judge is first timed alone on
`study.speed_rows` rows (before anything has warmed a cache with those prompts), then all judges
score the same rows `study.repeats` times at once: one `judgefleet score` run per judge x repeat,
each in its own output dir under output.dir/runs, so a stopped study resumes like `score` and each
run can be read by `judgefleet agree`. A poller reads each replica's memory from GET /pools
meanwhile. Then jobs.study.analysis makes the tables and jobs.study.report writes them.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

import httpx

from jobs.commands.common import check_columns
from jobs.commands.score import ScoreRun, configure_ray_data
from jobs.config import JobConfig, to_dict
from jobs.data.datasource import check_readable, count_rows, resolve_paths
from jobs.data.shards import prepare_output_dir, write_json
from jobs.data.summary import read_summary
from jobs.errors import ConfigError, DatasetError
from jobs.runtime.lineage import Lineage, logged_config
from jobs.study import analysis, report
from jobs.study.plan import (StudyPlan, plan, repeat_seed_offset, route_config, run_dir, score_config,
                             speed_dir)
from serve import wire
from serve.endpoint import Endpoint, JudgeEndpoint, quantize_ladder

log = logging.getLogger(__name__)


APP_NAME = "judgefleet-study"
STOP_WAIT_S = 10.0  # how long a stopped study waits for its runs to reach a batch boundary


class StudyStopped(Exception):
    """Raised in a score run's thread when the study is being stopped (Ctrl-C, SIGTERM)."""


def run(cfg: JobConfig, console=None, restart: bool = False) -> dict:
    return StudyRun(cfg, console, restart).run()


class StudyRun:
    def __init__(self, cfg: JobConfig, console=None, restart: bool = False):
        from rich.console import Console

        self.cfg = cfg
        self.console = console or Console(stderr=True)
        self.restart = restart
        self.started = time.perf_counter()
        self.out_dir: Optional[Path] = None
        self.files: List[Path] = []
        self.study: Optional[StudyPlan] = None
        self.rows: Optional[int] = None

    def run(self) -> dict:
        self.check()
        files = self.ladder()
        self.study = plan(self.cfg, files)
        write_json(self.out_dir / "study_plan.json", {"judges": [asdict(j) for j in self.study.judges],
                                                     "original": self.study.original,
                                                     "repeats": self.cfg.study.repeats})
        lineage = Lineage.start(self.cfg, "study", self.out_dir)
        failed = True
        try:
            lineage.use_dataset(self.files, {"format": self.cfg.dataset.format, "limit": self.cfg.dataset.limit})
            peaks = self.judge()
            result = analysis.analyze(self.cfg, self.study, self.out_dir, peaks)
            result.update(self._about())
            written = report.write(self.out_dir, result)
            report.show(result, written, self.console)
            lineage.log_study(self.out_dir, result, written, self._score_dirs(), self.files)
            failed = False
        finally:
            lineage.finish(failed)
        if lineage.run_dir:
            self.console.print(f"lineage: W&B {self.cfg.tracking.mode} run in {lineage.run_dir}", soft_wrap=True)
        return result

    # -- before Ray ---------------------------------------------------------------------------
    def check(self) -> None:
        """What fails without Ray fails first: the config's plan, the dataset, its columns, the port."""
        cfg, st = self.cfg, self.cfg.study
        plan(cfg)  # judges and study.original, before any file is made
        self.files = resolve_paths(cfg.dataset.path, cfg.dataset.format)
        first = check_readable(self.files, cfg.dataset.format)
        check_columns(first, cfg)
        for key, column in (("study.reference", st.reference), ("study.group", st.group)):
            if column and first is not None and column not in first:
                raise DatasetError(f"{key}: the dataset has no column '{column}' (its columns: {', '.join(first)})")
        if cfg.judge.url:
            raise ConfigError("judge.url: a study deploys its own route with every judge on it; leave judge.url "
                              "empty and list the judges under serve.models and study.ladder")
        self.out_dir = prepare_output_dir(cfg.output.dir, scores=False)
        total = count_rows(self.files, cfg.dataset.format)
        self.rows = total if cfg.dataset.limit is None or total is None else min(total, cfg.dataset.limit)
        if cfg.serve.port is not None:  # a port given and taken fails now, not after the ladder is made
            from serve.endpoint import check_port_free

            check_port_free(cfg.serve.host, cfg.serve.port)
        if self.restart:
            import shutil

            for sub in ("runs", "speed"):
                shutil.rmtree(self.out_dir / sub, ignore_errors=True)

    def ladder(self) -> list:
        """The ladder's files, made once and then found in the model cache by their digests."""
        st = self.cfg.study
        if not st.ladder:
            return []
        self.console.print(f"[bold]ladder[/]: {', '.join(st.ladder)} from {st.source or 'the bundled judge'}")
        try:
            return quantize_ladder(st.source, tuple(st.ladder), None,
                                   on_step=lambda text: self.console.print(text, style="dim", markup=False,
                                                                           soft_wrap=True))
        except ValueError as e:  # serve.quantize.QuantizeError: a source or a type the user can fix
            raise ConfigError(f"study: {e}") from None

    # -- on the route -------------------------------------------------------------------------
    def judge(self) -> Dict[str, int]:
        """Deploy every judge on one route, time each alone, then score with all at once; returns
        each judge's peak replica memory."""
        cfg, study = self.cfg, self.study
        cores = os.cpu_count() or 1
        served = route_config(cfg, study).models
        runs = len(study.judges) * cfg.study.repeats
        # A local Ray's logical CPUs must hold every replica (a vLLM one adds its engine's bundle)
        # and, at once, every score run's read task and client actor; short of that, runs wait for
        # a CPU that never frees (and a vLLM replica that restarts cannot be placed).
        needed = sum(m.num_cpus * m.replicas + (1 if m.engine == "vllm" else 0) for m in served) + 2 * runs + 2
        num_cpus = cfg.ray.num_cpus or max(8, 4 * cores, needed)
        # An app of its own: a `judgefleet serve` route on the same cluster stays as it is.
        owner = JudgeEndpoint(route_config(cfg, study), study.judges[0].id, ray_address=cfg.ray.address,
                              ray_num_cpus=num_cpus, app_name=APP_NAME)
        owner.check()  # the port: serve.port, or any free one when unset
        self.console.print(f"[bold]deploying[/] {len(study.judges)} judges on one route (port {owner.port}): "
                           + ", ".join(j.id for j in study.judges), soft_wrap=True)
        with owner as endpoint, PoolMemory(endpoint) as memory:
            configure_ray_data(cfg)
            self.console.print(f"  route up in {time.perf_counter() - self.started:.0f} s")
            if cfg.study.speed_rows:
                self.time_alone(endpoint)
            self.score_together(endpoint)
        return memory.peaks

    def time_alone(self, endpoint: Endpoint) -> None:
        """Each judge alone on the first speed_rows rows, one after another (the others idle)."""
        cfg = self.cfg
        rows = cfg.study.speed_rows if self.rows is None else min(cfg.study.speed_rows, self.rows)
        for j in self.study.judges:
            out = speed_dir(self.out_dir, j.id)
            done = read_summary(out)
            if done and done.get("rows") == rows and done.get("resumed_rows") == 0 and done.get("samples_per_s"):
                self.console.print(f"[bold]speed[/] {j.id}: {done['samples_per_s']:.3f} samples/s (measured before)")
                continue
            sub = score_config(cfg, j.id, out, endpoint.url, endpoint.api_key, limit=rows)
            self.console.print(f"[bold]speed[/] {j.id}: {rows} rows alone ...")
            summary = ScoreRun(sub, _quiet_console(), restart=True, on_batch=lambda n: None).run()
            self.console.print(f"  {summary['samples_per_s']:.3f} samples/s, "
                               f"{summary['completion_tokens_per_s']:.1f} generated tokens/s")

    def score_together(self, endpoint: Endpoint) -> None:
        """One score run per judge x repeat, all at once, each in a thread of its own."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        cfg, study = self.cfg, self.study
        runs = [(j.id, k) for k in range(1, cfg.study.repeats + 1) for j in study.judges]
        stop = threading.Event()
        errors: List[BaseException] = []
        self.console.print(f"[bold]scoring[/] {self.rows if self.rows is not None else 'all'} rows x "
                           f"{cfg.study.repeats} repeats with {len(study.judges)} judges at once")
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=self.console) as progress:
            tasks = {key: progress.add_task(f"{key[0]} r{key[1]}", total=self.rows) for key in runs}

            def score(key):
                judge_id, repeat = key

                def on_batch(n: int) -> None:
                    if stop.is_set():
                        raise StudyStopped()
                    progress.advance(tasks[key], n)

                sub = score_config(cfg, judge_id, run_dir(self.out_dir, judge_id, repeat), endpoint.url,
                                   endpoint.api_key, seed_offset=repeat_seed_offset(repeat))
                summary = ScoreRun(sub, _quiet_console(), on_batch=on_batch).run()
                progress.update(tasks[key], completed=summary["rows"], total=summary["rows"])
                return summary

            pool = concurrent.futures.ThreadPoolExecutor(len(runs), thread_name_prefix="study-run")
            futures = {pool.submit(score, key): key for key in runs}
            try:
                for future in concurrent.futures.as_completed(futures):
                    try:
                        future.result()
                    except StudyStopped:
                        pass
                    except Exception as e:  # noqa: BLE001 - stop the others, then report the first
                        log.error("study run %s r%d failed: %s", *futures[future], e)
                        errors.append(e)
                        stop.set()
            except KeyboardInterrupt:
                # Each run stops at its next batch and writes what it judged. A run waiting on a
                # batch that does not come is ended by Ray's shutdown on the way out (its shards
                # are written in its `finally`), so the wait here is bounded.
                self.console.print("[yellow]stopping[/]: each run writes what it has judged ...")
                stop.set()
                concurrent.futures.wait(futures, timeout=STOP_WAIT_S)
                _quiet_after_shutdown()
                raise
            finally:
                pool.shutdown(wait=False, cancel_futures=True)
        if errors:
            raise errors[0]

    # -- the record ---------------------------------------------------------------------------
    def _about(self) -> dict:
        cfg = self.cfg
        return {
            "dataset": str(cfg.dataset.path),
            "dataset_rows": self.rows,
            "output_dir": str(self.out_dir),
            "sampling": to_dict(cfg)["sampling"],
            "judges": [asdict(j) for j in self.study.judges],
            "from_bundled": cfg.study.source is None and bool(cfg.study.ladder),
            "wall_s": round(time.perf_counter() - self.started, 1),
            "config": logged_config(cfg),
        }

    def _score_dirs(self) -> List[dict]:
        dirs = [{"name": analysis.source_name(j.id, k), "path": str(run_dir(self.out_dir, j.id, k)), "judge_model": j.id}
                for j in self.study.judges for k in range(1, self.cfg.study.repeats + 1)]
        if self.cfg.study.speed_rows:
            dirs += [{"name": f"{j.id}#speed", "path": str(speed_dir(self.out_dir, j.id)), "judge_model": j.id}
                     for j in self.study.judges]
        return dirs


class PoolMemory:
    """Polls the route's GET /pools while the study runs: the peak memory each judge's replica
    reports of itself (serve.process_memory), as `peaks[model id]` in bytes."""

    def __init__(self, endpoint: Endpoint, interval_s: float = 3.0):
        self.url = endpoint.url[: -len("/v1")] + wire.POOLS_PATH
        self.headers = wire.auth_headers(endpoint.api_key)
        self.interval_s = interval_s
        self.peaks: Dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pool-memory", daemon=True)

    def __enter__(self) -> "PoolMemory":
        logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per poll would bury the progress
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval_s):
                return

    def sample(self) -> None:
        try:
            pools = wire.parse_pools(httpx.get(self.url, headers=self.headers, timeout=10).json())
        except (httpx.HTTPError, ValueError):
            return  # a busy route: the next poll
        for model_id, members in pools.items():
            for m in members:
                peak = (m.engine_stats or {}).get("peak_rss_bytes")
                if isinstance(peak, int):
                    self.peaks[model_id] = max(self.peaks.get(model_id, 0), peak)


def _quiet_after_shutdown() -> None:
    """Runs still inside Ray Data when the study stops end with Ray's shutdown: their errors are
    expected then, and Ray must not auto-connect them to another cluster on this machine
    (Ray Data calls `ray.init()` itself when it finds none)."""
    from ray._private import auto_init_hook

    auto_init_hook.enable_auto_connect = False
    for name in ("ray.data", "ray._private.worker", "ray"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _quiet_console():
    from rich.console import Console

    return Console(quiet=True)

