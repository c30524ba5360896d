"""`judgefleet bench`: the same rows, model and sampling, judged several ways, one after another.

- article: the method of the lm-buddy article - a sequential OpenAI client, one request per
  sample, against llama-cpp-python's own server (`python -m llama_cpp.server`, without
  logits_all, which the article's method never needed), verdicts parsed from the text.
- engine: judgefleet's llama.cpp engine driven directly in this process - no Ray, no HTTP - with
  the judge protocol (feedback, then the constrained score token). The ceiling for the route.
- judgefleet: `judgefleet score` through Ray Data and the Serve route.
- llama-server, vllm-server: the peers a CPU user would pick, each its own OpenAI server with a
  concurrent client (jobs/bench/peers.py).

With bench.rounds > 1 every method runs that many times, in alternating order (jobs/bench/rounds.py).
Each is timed from its first request to its last answer (start-up reported apart), with the peak
memory of its server's process tree by PSS and USS. Writes bench.json and bench.md under
output.dir/bench: the methods' table, the article-style speed and cost table
(jobs/bench/table.py) and a cost table for every `bench.machines` price.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import platform
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Tuple

from jobs.bench import rounds
from jobs.bench.client import method_result as _result
from jobs.bench.peers import Skipped, llama_server_method, vllm_server_method
from jobs.bench.table import describe, hardware, seed_markdown, seed_table
from jobs.commands.common import check_columns, row_stream
from jobs.config import JobConfig
from jobs.data.costs import projected_costs
from jobs.data.datasource import check_readable, resolve_paths
from jobs.data.shards import prepare_output_dir, write_json
from jobs.errors import ConfigError
from jobs.redact import redact
from jobs.judge.row_judge import JudgeSettings, RowJudge, sample_seed
from jobs.judge.verdict import parse_verdict
from jobs.runtime.lineage import Lineage
from jobs.runtime.memory import PeakMemory
from jobs.runtime.pipeline import PROMPT
from serve.endpoint import llama_cpp_python_server

log = logging.getLogger(__name__)


def run(cfg: JobConfig, console=None) -> dict:
    from rich.console import Console

    console = console or Console(stderr=True)
    rows = _rows(cfg)
    member = _llama_member(cfg)
    out_dir = prepare_output_dir(cfg.output.dir) / "bench"
    out_dir.mkdir(parents=True, exist_ok=True)
    runners = {"article": _article, "engine": _engine, "judgefleet": _judgefleet,
               "llama-server": _peer(llama_server_method, console), "vllm-server": _peer(vllm_server_method, console)}
    per_round: List[Dict[str, dict]] = [{} for _ in range(cfg.bench.rounds)]
    skipped = set()
    lineage = Lineage.start(cfg, "bench", out_dir)
    failed = True
    try:
        lineage.use_dataset(resolve_paths(cfg.dataset.path, cfg.dataset.format),
                            {"format": cfg.dataset.format, "limit": cfg.dataset.limit})
        for round_, method in rounds.schedule(cfg.bench.methods, cfg.bench.rounds):
            if method in skipped:
                continue
            of = f" (round {round_ + 1} of {cfg.bench.rounds})" if cfg.bench.rounds > 1 else ""
            console.print(f"[bold]bench[/] {method}{of}: {len(rows)} rows x {cfg.sampling.num_samples} samples ...")
            time.sleep(3)  # let the previous method's processes finish exiting: the cores are shared
            try:
                result = per_round[round_][method] = runners[method](cfg, rows, member, out_dir)
            except Skipped as why:
                console.print(str(why), markup=False, highlight=False, soft_wrap=True)
                skipped.add(method)  # what is missing now is missing in every round
                continue
            console.print(f"  {result['samples_per_s']:.3f} samples/s, {result['time_s']:.1f} s")
        report = _report(cfg, rows, member, per_round)
        write_json(out_dir / "bench.json", report)
        (out_dir / "bench.md").write_text(markdown(report))
        lineage.log_report({f"{m}/samples_per_s": r["samples_per_s"] for m, r in report["results"].items()},
                           [out_dir / "bench.json", out_dir / "bench.md"], kind="bench-report",
                           name=Path(cfg.output.dir).resolve().name)
        failed = False
    finally:
        lineage.finish(failed)
    console.print(markdown(report))
    return report


# -- the methods judgefleet runs itself (the peers: jobs/bench/peers.py) -------------------------
def _article(cfg: JobConfig, rows: List[Tuple[str, str]], member, out_dir: Path) -> dict:
    import openai

    s = cfg.sampling
    settings = JudgeSettings.from_config(cfg, member.context_length, route=False)
    # The server as the article's method needs it: the judge's context, and no logits_all (its
    # default, which keeps n_ctx x vocabulary logits for logprobs; the article's requests - as
    # lm-buddy's Prometheus job sends them - ask for none, and llamafile, the article's server,
    # keeps no such thing). bench.article_logits_all=true measures the server's default.
    options = ["--logits_all", str(cfg.bench.article_logits_all)]
    if member.threads:
        options += ["--n_threads", str(member.threads)]
    started = time.perf_counter()
    with llama_cpp_python_server(member.model, member.context_length, cfg.judge.model, *options) as (url, server):
        startup = time.perf_counter() - started
        client = openai.OpenAI(base_url=url, api_key="unused", max_retries=2, timeout=cfg.judge.timeout_s)
        scored = answered = prompt_tokens = completion_tokens = 0
        with PeakMemory(extra_pids=[server.pid], include_self=False) as peak:
            t0 = time.perf_counter()
            for row_id, prompt in rows:
                seed = sample_seed(s.seed, row_id)
                for i in range(s.num_samples):  # one request per sample, one at a time
                    answer = client.completions.create(
                        model=cfg.judge.model, prompt=settings.format_prompt(prompt), max_tokens=s.max_tokens,
                        temperature=s.temperature, top_p=s.top_p, seed=None if seed is None else seed + i,
                    )
                    answered += 1
                    scored += parse_verdict(answer.choices[0].text, cfg.judge.mode).score is not None
                    prompt_tokens += answer.usage.prompt_tokens
                    completion_tokens += answer.usage.completion_tokens
            elapsed = time.perf_counter() - t0
    return _result(len(rows), answered, scored, prompt_tokens, completion_tokens, elapsed, startup,
                   "sequential openai client -> python -m llama_cpp.server "
                   f"(logits_all={cfg.bench.article_logits_all}), verdict parsed from text", peak.report())


def _engine(cfg: JobConfig, rows: List[Tuple[str, str]], member, out_dir: Path) -> dict:
    from jobs.client.inprocess import InProcessClient

    async def go():
        started = time.perf_counter()
        client = await InProcessClient.start(member, max_in_flight=cfg.judge.max_in_flight)
        startup = time.perf_counter() - started
        judge = RowJudge(client, JudgeSettings.from_config(cfg, client.server.config.context_length, route=True))
        with PeakMemory() as peak:
            t0 = time.perf_counter()
            verdicts = await asyncio.gather(*(judge.judge(prompt, row_id) for row_id, prompt in rows))
            elapsed = time.perf_counter() - t0
        await client.aclose()
        samples = [x for v in verdicts for x in v.samples]
        answered = sum(1 for v in verdicts for x in v.samples if x.feedback is not None)
        return _result(len(rows), answered, sum(x.score is not None for x in samples),
                       sum(v.prompt_tokens for v in verdicts), sum(v.completion_tokens for v in verdicts),
                       elapsed, startup, "llama.cpp engine in this process, judge protocol, no Ray, no HTTP",
                       peak.report())

    return asyncio.run(go())


def _judgefleet(cfg: JobConfig, rows: List[Tuple[str, str]], member, out_dir: Path) -> dict:
    from rich.console import Console

    from jobs.commands.score import run as score

    job = copy.deepcopy(cfg)
    job.output.dir = str(out_dir / "judgefleet-scores")
    job.output.group_by = []
    job.tracking.mode = "disabled"  # the bench's own W&B run records it
    with PeakMemory() as peak:
        summary = score(job, console=Console(stderr=True, quiet=True), restart=True)
    return _result(summary["rows"], _answered(Path(job.output.dir)), summary["samples_scored"],
                   summary["prompt_tokens"], summary["completion_tokens"], summary["wall_time_s"],
                   summary["total_time_s"] - summary["wall_time_s"],
                   "judgefleet score: Ray Data -> Serve route -> llama.cpp replica (memory: the whole Ray tree)",
                   peak.report())


def _peer(method, console):
    """A peer's runner, its per-N progress printed on the console."""
    def run_peer(cfg, rows, member, out_dir):
        return method(cfg, rows, member, out_dir,
                      say=lambda line: console.print(line, markup=False, highlight=False, soft_wrap=True))

    return run_peer


# -- helpers --------------------------------------------------------------------------------
def _rows(cfg: JobConfig) -> List[Tuple[str, str]]:
    """(row_id, prompt) of every judgeable row, rendered as `judgefleet score` renders them."""
    files = resolve_paths(cfg.dataset.path, cfg.dataset.format)
    check_columns(check_readable(files, cfg.dataset.format), cfg)
    rows = [(r["row_id"], r[PROMPT]) for t in row_stream(cfg, files).tables() for r in t.to_pylist() if r[PROMPT]]
    if not rows:
        raise ConfigError("bench: the dataset has no row that can be judged")
    return rows


def _llama_member(cfg: JobConfig):
    for m in cfg.serve.models:
        if m.id == cfg.judge.model and m.engine == "llama.cpp":
            return m
    raise ConfigError(
        f"bench: judge.model '{cfg.judge.model}' needs a llama.cpp member under serve.models: the methods "
        "run the same GGUF file (llama-cpp-python's server, llama-server, the engine, the route)"
    )


def _answered(output_dir: Path) -> int:
    """Samples whose feedback came back, read from the scored shards (as the engine method counts them)."""
    import pyarrow.parquet as pq

    return sum(
        sum(f is not None for f in feedbacks or [])
        for shard in sorted((output_dir / "scores").glob("part-*.parquet"))
        for feedbacks in pq.read_table(shard, columns=["feedbacks"]).column("feedbacks").to_pylist()
    )


def _report(cfg: JobConfig, rows, member, per_round: List[Dict[str, dict]]) -> dict:
    results, ratios, ratios_by_round = rounds.combine(per_round)
    evaluation_rows = cfg.bench.evaluation_rows or len(rows)
    judgments = evaluation_rows * cfg.sampling.num_samples
    costs = [{"method": c.pop("name"), **c} for method, r in results.items()
             for c in projected_costs(method, r["samples_per_s"], cfg.bench.machines, judgments)]
    hw = hardware()
    return {
        "machine": machine_description(),
        "hardware": hw,
        "dataset": str(cfg.dataset.path),
        "rows": len(rows),
        "num_samples": cfg.sampling.num_samples,
        "max_tokens": cfg.sampling.max_tokens,
        "temperature": cfg.sampling.temperature,
        "top_p": cfg.sampling.top_p,
        "model": member.model,
        "engine": redact(asdict(member)),  # a member's env and engine_kwargs may hold credentials
        "rounds": len(per_round),
        "results": results,
        "ratios": ratios,
        "ratios_by_round": ratios_by_round,
        "evaluation": {"rows": evaluation_rows, "judgments": judgments},
        "costs": costs,
        "seed_table": seed_table(results, cfg.bench.machines, hw),
    }


def markdown(r: dict) -> str:
    lines = [
        "# judgefleet bench",
        "",
        f"{r['rows']} rows of `{r['dataset']}` x {r['num_samples']} samples, max_tokens {r['max_tokens']}, "
        f"temperature {r['temperature']}, top_p {r['top_p']}, model `{r['model']}`. Machine: {r['machine']}.",
        "",
        "| method | time s | start-up s | rows/s | samples/s | scored samples/s | parse rate | prompt tok/s | completion tok/s | peak PSS MiB (USS) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, m in r["results"].items():
        lines.append(_row(name, m))
    lines += ["", *[f"- {name}: {m['how']}" for name, m in r["results"].items()], ""]
    by_n = r["results"].get("llama-server", {}).get("by_parallel")
    if by_n:
        lines += [f"llama-server at each --parallel N (its row above is the best, N = "
                  f"{r['results']['llama-server']['parallel']}):", "",
                  "| method | time s | start-up s | rows/s | samples/s | scored samples/s | parse rate | prompt tok/s | completion tok/s | peak PSS MiB (USS) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
                  *[_row(f"llama-server -np {n}", m) for n, m in by_n.items()], ""]
    if r.get("rounds", 1) > 1:
        lines += [f"{r['rounds']} rounds, each in the reverse order of the one before; a method's row is its "
                  "median round (the lower middle one), a ratio the median of the rounds' ratios.", "",
                  "| samples/s of, or ratio | " + " | ".join(f"round {i + 1}" for i in range(r["rounds"])) + " |",
                  "| --- |" + " --- |" * r["rounds"],
                  *[f"| {name} | " + " | ".join(map(str, m["rounds"])) + " |" for name, m in r["results"].items()],
                  *[f"| {k} | " + " | ".join(map(str, v)) + " |" for k, v in r["ratios_by_round"].items()], ""]
    if r["ratios"]:
        lines += ["Ratios of samples/s: " + ", ".join(f"{k} = {v}" for k, v in r["ratios"].items()) + ".", ""]
    lines += [
        "Prompt tokens are as each server reports them: every request's whole prompt, cached or not (a request "
        "with `n` counts its prompt once). Completion tokens count every sample (llama-server's usage counts one "
        "choice of `n`: the bench counts the others).",
        "",
        f"## Cost of the whole evaluation ({r['evaluation']['rows']} rows, {r['evaluation']['judgments']} judgments), at these speeds",
        "",
        "| method | machine | $/hour | hours | $ | $ per 1,000 judgments |",
        "| --- | --- | --- | --- | --- | --- |",
        *[f"| {c['method']} | {c['machine']} | {c['usd_per_hour']} | {c['hours']} | {c['usd']} | {c['usd_per_1000_judgments']} |"
          for c in r["costs"]],
        "",
        seed_markdown(r["seed_table"]),
    ]
    return "\n".join(lines)


def _row(name: str, m: dict) -> str:
    return (f"| {name} | {m['time_s']} | {m['startup_s']} | {m['rows_per_s']} | {m['samples_per_s']} | "
            f"{m['scored_samples_per_s']} | {m['parse_rate']} | {m['prompt_tokens_per_s']} | "
            f"{m['completion_tokens_per_s']} | {m.get('peak_pss_mib')} ({m.get('peak_uss_mib')}) |")


def machine_description() -> str:
    return f"{describe(hardware())}, {platform.platform()}, Python {platform.python_version()}"
