"""A long fuzz campaign against the real route (issue 11): does any request make it answer 5xx, a
misshapen 4xx, too slowly, refuse a valid request, or leave it slower or busier afterwards?

    python -m benchmarks.route_fuzz [--requests 5000] [--seed 1] [--concurrency 8] [--max-tokens 2]
                                    [--fronts proxy,direct] [--time-bound 60] [--rounds 2] [--out benchmarks/reports]

Requests come from the generators of the CI slice (tests/serve/fuzz_requests.py: valid, nearly
valid, hostile and chat bodies), drawn by hypothesis with a fixed seed, and are split between the
fronts; each front gets the route deployed on its own (local Ray, the bundled judge on llama.cpp,
context 2048, 4 parallel sequences, as the test session's route). Per front: a good request's
latency before and after, the campaign at `--concurrency` (`--rounds` times, the replica's memory
read after each), then the engine must be idle (no slot busy, nothing waiting). Writes route-fuzz.md (and, with --json,
every failing request and number as JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import logging
import os
import statistics
import time
from pathlib import Path
from typing import List, Optional

import aiohttp

from benchmarks.common import REPO, machine_description

GOOD = {"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}


def draw_requests(count: int, seed: int, max_tokens: int) -> list:
    """`count` requests from the campaign's generators, the same ones for the same seed."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fixed_seed

    from tests.serve.fuzz_requests import requests

    drawn: list = []

    @fixed_seed(seed)
    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(requests(max_tokens=max_tokens))
    def collect(request):
        drawn.append(request)

    collect()
    return drawn


async def campaign(base: str, requests: list, concurrency: int, time_bound_s: float) -> List[dict]:
    from tests.serve.fuzz_requests import problems

    results: List[dict] = []
    queue = collections.deque(requests)
    timeout = aiohttp.ClientTimeout(total=time_bound_s * 3)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        async def worker():
            while queue:
                request = queue.popleft()
                started = time.perf_counter()
                try:
                    async with session.post(base + request.path, data=request.body,
                                            headers={"content-type": "application/json"}) as response:
                        status, payload = response.status, await response.read()
                except (aiohttp.ClientError, asyncio.TimeoutError) as e:
                    status, payload = 0, repr(e).encode()
                elapsed = time.perf_counter() - started
                found = problems(request, status, payload, elapsed, time_bound_s) if status else [f"no answer: {payload[:100]!r}"]
                results.append({"kind": request.kind, "what": request.what, "status": status,
                                "elapsed_s": round(elapsed, 4), "problems": found,
                                "answer": payload[:300].decode("utf-8", "replace") if found else None})

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return results


def good_latency(base: str, model: str) -> float:
    import httpx

    times = []
    for _ in range(5):
        started = time.perf_counter()
        response = httpx.post(base + "/v1/completions", json=dict(GOOD, model=model), timeout=120)
        response.raise_for_status()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def engine_state(base: str, model: str, wait_s: float = 15.0) -> dict:
    """The replica's statistics once it is idle (or after wait_s): slots, queue, memory."""
    import httpx

    from serve import wire

    deadline = time.monotonic() + wait_s
    while True:
        (member,) = wire.parse_pools(httpx.get(base + wire.POOLS_PATH, timeout=30).json())[model]
        stats = dict(member.engine_stats or {}, outstanding=member.outstanding, failed=member.failed)
        idle = stats.get("busy_slots") == 0 and stats.get("waiting_requests") == 0 and member.outstanding == 0
        if idle or time.monotonic() > deadline:
            return dict(stats, idle=idle)
        time.sleep(0.25)


def run_front(front: str, requests: list, concurrency: int, time_bound_s: float, rounds: int) -> dict:
    from jobs.config import load_config
    from serve.endpoint import JudgeEndpoint
    from tests.conftest import free_port

    cfg = load_config(REPO / "conf" / "quickstart.yaml", [
        f"serve.port={free_port()}", f"serve.front={front}", "serve.models.0.context_length=2048",
        "serve.models.0.parallel=4"])
    with JudgeEndpoint(cfg.serve, cfg.judge.model) as endpoint:
        base, model = endpoint.url[: -len("/v1")], endpoint.model
        good_latency(base, model)  # warm: a replica's first decodes are slow
        load_before = os.getloadavg()[0]
        before = good_latency(base, model)
        state_before = engine_state(base, model)
        started = time.perf_counter()
        results, rss = [], []
        for _ in range(rounds):  # the same requests again: memory that keeps growing would be a leak
            results += asyncio.run(campaign(base, requests, concurrency, time_bound_s))
            rss.append(engine_state(base, model).get("rss_bytes"))
        seconds = time.perf_counter() - started
        state_after = engine_state(base, model)
        after = good_latency(base, model)
        load_after = os.getloadavg()[0]
    return {"front": front, "requests": len(results), "seconds": round(seconds, 1), "results": results,
            "good_latency_s": {"before": round(before, 3), "after": round(after, 3)},
            "load_average": {"before": round(load_before, 1), "after": round(load_after, 1)},
            "rounds": rounds, "rss_after_each_round": rss,
            "engine_before": state_before, "engine_after": state_after}


def summarize(front_run: dict) -> dict:
    results = front_run["results"]
    by_kind = collections.defaultdict(collections.Counter)
    latencies = collections.defaultdict(list)
    for r in results:
        by_kind[r["kind"]][str(r["status"])] += 1
        latencies[r["kind"]].append(r["elapsed_s"])
    found = collections.Counter()
    examples = {}
    for r in results:
        for p in r["problems"]:
            key = p.split(":")[0][:80]
            found[key] += 1
            examples.setdefault(key, f"{r['what']} -> {r['answer']}")
    return {
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "latency_s": {k: {"p50": round(statistics.median(v), 3), "p99": round(sorted(v)[int(0.99 * (len(v) - 1))], 3),
                          "max": round(max(v), 3)} for k, v in sorted(latencies.items())},
        "problems": dict(found), "problem_examples": examples,
    }


def run(count: int, seed: int, concurrency: int, max_tokens: int, fronts: List[str], time_bound_s: float,
        out_dir: Path, json_path: Optional[Path] = None, rounds: int = 2) -> dict:
    started = time.perf_counter()
    requests = draw_requests(count, seed, max_tokens)
    drawn_s = time.perf_counter() - started
    from tests.serve.fuzz_requests import extremes

    runs = []
    for i, front in enumerate(fronts):  # the drawn requests are split between the fronts; each gets the extremes
        share = extremes() + requests[i::len(fronts)]
        runs.append(run_front(front, share, concurrency, time_bound_s, rounds))
    report = {
        "machine": machine_description(),
        "command": f"python -m benchmarks.route_fuzz --requests {count} --seed {seed} --concurrency {concurrency} "
                   f"--max-tokens {max_tokens} --fronts {','.join(fronts)} --time-bound {time_bound_s:g} --rounds {rounds}",
        "drawn": len(requests), "extremes": len(extremes()), "draw_seconds": round(drawn_s, 1),
        "time_bound_s": time_bound_s,
        "fronts": [dict({k: v for k, v in r.items() if k != "results"}, **summarize(r)) for r in runs],
        "failures": [dict(x, front=r["front"]) for r in runs for x in r["results"] if x["problems"]][:200],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "route-fuzz.md").write_text(markdown(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2))
    return report


def markdown(r: dict) -> str:
    lines = [
        "# Route fuzz campaign",
        "",
        f"Machine: {r['machine']}. Command: `{r['command']}`.",
        "",
        f"{r['drawn']} requests drawn by hypothesis from tests/serve/fuzz_requests.py ({r['draw_seconds']} s to draw),",
        f"split between the fronts, plus the {r['extremes']} most hostile requests of each shape (`extremes()`) sent to",
        "each front, over real HTTP to the deployed route (local Ray, the bundled judge on",
        "llama.cpp: context 2048, 4 parallel sequences). Kinds: `valid` completions (must be 200), `nearly` valid",
        "ones with one thing wrong (must be a 4xx), `hostile` bodies (sizes, numbers, deep or huge JSON, bytes;",
        "must not be a 5xx), `chat` bodies (a 4xx here: the judge is a base model without a chat template).",
        f"Every 4xx must be OpenAI-shaped and every answer must come within {r['time_bound_s']:g} s.",
        "",
    ]
    for f in r["fronts"]:
        lines += [
            f"## {f['front']} front: {f['requests']} requests ({f['rounds']} rounds of the same {f['requests'] // f['rounds']}) "
            f"in {f['seconds']} s",
            "",
            "| kind | answers by status | p50 s | p99 s | max s |",
            "| --- | --- | --- | --- | --- |",
        ]
        for kind, counts in f["by_kind"].items():
            lat = f["latency_s"][kind]
            shown = ", ".join(f"{s}: {n}" for s, n in sorted(counts.items()))
            lines.append(f"| {kind} | {shown} | {lat['p50']} | {lat['p99']} | {lat['max']} |")
        e0, e1 = f["engine_before"], f["engine_after"]
        lines += [
            "",
            f"- Problems: {sum(f['problems'].values()) or 'none'}"
            + "".join(f"\n  - {n} x {k} (e.g. `{f['problem_examples'][k][:200]}`)" for k, n in f["problems"].items()),
            f"- A good request (median of 5, after a warm-up): {f['good_latency_s']['before']} s before, "
            f"{f['good_latency_s']['after']} s after (the machine's 1-minute load average: "
            f"{f['load_average']['before']} before, {f['load_average']['after']} after; other work shared its 2 cores).",
            f"- Engine after the campaign: {'idle' if e1.get('idle') else 'NOT idle'} (busy slots {e1.get('busy_slots')}, "
            f"waiting {e1.get('waiting_requests')}, requests out {e1.get('outstanding')}, members marked failed "
            f"{e1.get('failed')}); replica RSS {_mib(e0.get('rss_bytes'))} before, {_mib(e1.get('rss_bytes'))} after, "
            f"peak {_mib(e1.get('peak_rss_bytes'))}; after each round: {', '.join(_mib(b) for b in f['rss_after_each_round'])}.",
            "",
        ]
    return "\n".join(lines)


def _mib(value) -> str:
    return f"{value / 2**20:.0f} MiB" if isinstance(value, (int, float)) else "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=2, help="max_tokens of valid requests (keeps it minutes)")
    parser.add_argument("--fronts", default="proxy,direct")
    parser.add_argument("--time-bound", type=float, default=60.0, help="seconds any one answer may take")
    parser.add_argument("--rounds", type=int, default=2, help="times each front gets its requests (memory growth)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    parser.add_argument("--json", type=Path, default=None, help="also write every number and failure here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    report = run(args.requests, args.seed, args.concurrency, args.max_tokens, args.fronts.split(","),
                 args.time_bound, args.out, args.json, args.rounds)
    print(markdown(report))


if __name__ == "__main__":
    main()
