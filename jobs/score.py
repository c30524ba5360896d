"""`judgefleet score`: check everything that can be checked, then stream the dataset through the judge."""

from __future__ import annotations

import functools
import logging
import time
from pathlib import Path

from jobs import endpoint as ep
from jobs.config import JobConfig, to_dict
from jobs.datasource import RowStream, check_readable, count_rows, make_datasource, resolve_paths
from jobs.errors import DatasetError
from jobs.judging import JudgeSettings
from jobs.pipeline import RESULT_COLUMNS, build_dataset, prompt_columns
from jobs.prompts import system_prompt
from jobs.shards import ShardWriter, prepare_output_dir, write_json
from jobs.summary import SummaryBuilder, print_summary

log = logging.getLogger(__name__)


def run(cfg: JobConfig, console=None) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True)
    started = time.perf_counter()

    # 1. Everything that fails without Ray fails first.
    files = resolve_paths(cfg.dataset.path, cfg.dataset.format)
    first = check_readable(files, cfg.dataset.format)
    check_columns(first, cfg)
    out_dir = prepare_output_dir(cfg.output.dir)
    external = ep.check_external(cfg) if cfg.judge.url else None
    if external is None:
        ep.check_port_free(cfg.serve.host, cfg.serve.port)
    total = count_rows(files, cfg.dataset.format)
    if total is not None and cfg.dataset.limit is not None:
        total = min(total, cfg.dataset.limit)

    # 2. Ray, and the judge route unless an external URL was given.
    started_ray = ep.connect_ray(cfg)
    endpoint = external
    try:
        if endpoint is None:
            console.print(f"[bold]deploying[/] the judge route ({cfg.judge.model}) on port {cfg.serve.port} ...")
            endpoint = ep.deploy_route(cfg)
        summary = _score(cfg, files, endpoint, out_dir, total, console, started)
    finally:
        if endpoint is not None and endpoint.deployed:
            ep.remove_route()
        if started_ray:
            import ray

            ray.shutdown()
    print_summary(summary, console)
    return summary


def _score(cfg: JobConfig, files, endpoint: ep.Endpoint, out_dir: Path, total, console, started: float) -> dict:
    from ray.data import DataContext
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    context = DataContext.get_current()
    context.execution_options.preserve_order = True  # same input, same shards
    context.enable_progress_bars = False  # ours counts scored rows
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    j, s = cfg.judge, cfg.sampling
    settings = JudgeSettings(
        model=j.model, mode=j.mode, api=j.api, num_samples=s.num_samples, max_tokens=s.max_tokens,
        temperature=s.temperature, top_p=s.top_p, seed=s.seed, top_logprobs=s.top_logprobs, strict=j.strict,
        system_prompt=j.system_prompt if j.system_prompt is not None else system_prompt(j.mode),
        prompt_format=j.prompt_format, max_model_len=endpoint.max_model_len,
    )
    stream = RowStream(files, cfg.dataset.format, cfg.dataset.id_field, cfg.dataset.limit, reserved=RESULT_COLUMNS,
                       annotate=functools.partial(prompt_columns, dataset=cfg.dataset, mode=j.mode))
    ds = build_dataset(make_datasource(stream), settings, endpoint.url, endpoint.api_key,
                       j.clients, j.max_in_flight, j.timeout_s, j.max_retries, cfg.output.keep_prompt)
    writer = ShardWriter(out_dir, cfg.output.shard_rows)
    summary = SummaryBuilder(j.mode, cfg.output.group_by)
    scoring_started = time.perf_counter()
    with Progress(TextColumn("[bold]scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                  TimeElapsedColumn(), console=console, transient=False) as progress:
        task = progress.add_task("score", total=total)
        for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
            writer.add(batch)
            summary.add(batch)
            progress.advance(task, batch.num_rows)
    writer.close()
    # Rates count the scoring itself; total_time_s adds starting Ray and the judge route.
    result = summary.result(
        time.perf_counter() - scoring_started,
        extra={
            "total_time_s": round(time.perf_counter() - started, 3),
            "judge": {"model": j.model, "url": endpoint.url, "api": j.api, "mode": j.mode},
            "dataset": str(cfg.dataset.path),
            "output_dir": str(out_dir),
            "shards": len(writer.paths),
            "config": to_dict(cfg),
        },
    )
    write_json(out_dir / "summary.json", result)
    return result


def check_columns(first: dict, cfg: JobConfig) -> None:
    """The first record has the columns the config names (a typo fails here, not per row)."""
    if not first:
        return
    d = cfg.dataset
    if d.prompt_field:
        needed = [d.prompt_field]
    elif cfg.judge.mode == "absolute":
        needed = [d.instruction_field, d.response_field]
    else:
        needed = [d.instruction_field, d.response_a_field, d.response_b_field]
    if not d.prompt_field and d.rubric is None and d.rubric_field:
        needed.append(d.rubric_field)
    if d.id_field:
        needed.append(d.id_field)
    missing = [c for c in needed if c not in first]
    if missing:
        cols = ", ".join(first)
        hint = "dataset.prompt_field" if d.prompt_field else "the dataset.*_field settings"
        raise DatasetError(
            f"dataset has no column {', '.join(repr(m) for m in missing)} (its columns: {cols}); fix {hint}"
            + ("" if d.prompt_field or d.rubric is not None else ", or give one rubric for all rows with dataset.rubric")
        )
