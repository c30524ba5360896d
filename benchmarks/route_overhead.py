"""What the route itself costs: requests/s and added latency of ingress + pool routing.

    python -m benchmarks.route_overhead [--seconds 20] [--out benchmarks/reports]

A trivial backend (the stand-in OpenAI server of tests/stub_openai.py, in its own process)
answers instantly. The same load is sent to it directly, then through judgefleet's route with
each front: `proxy` (Serve's HTTP proxy -> ingress replica) and `direct` (the ingress replica's
own listener), the route then doing pool routing and calling the backend as an `openai` pool
member. The difference is the route's overhead. Writes route_overhead.json and route_overhead.md.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import time
from pathlib import Path

import aiohttp

from benchmarks.common import REPO, machine_description, stub_judge, write_report

BODY = {"model": "bench-judge", "prompt": "Feedback: fine. [RESULT] ", "max_tokens": 1, "temperature": 0}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure(url: str, concurrency: int, seconds: float) -> dict:
    """Closed-loop load: `concurrency` workers, each sending the next request when one returns."""
    latencies, errors = [], 0
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                async with session.post(url + "/completions", json=BODY) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                        continue
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(1000 * statistics.median(latencies), 2),
        "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2),
    }


def run(seconds: float, out_dir: Path) -> dict:
    import ray

    from jobs.config import load_config
    from serve.endpoint import JudgeEndpoint

    with stub_judge() as stub_url:
        ray.init(address="local", num_cpus=8, include_dashboard=False, logging_level=logging.WARNING)
        results = {"backend": _load(stub_url, seconds)}
        for front in ("proxy", "direct"):
            cfg = load_config(REPO / "conf" / "quickstart.yaml", [
                f"serve.port={free_port()}", f"serve.front={front}", "judge.model=bench-judge", "serve.models=[{}]",
                "serve.models.0.id=bench-judge", "serve.models.0.name=stub", "serve.models.0.engine=openai",
                f"serve.models.0.model={stub_url}", "serve.models.0.engine_kwargs={model: stub-judge}",
                "serve.models.0.max_ongoing_requests=512",
            ])
            # Each front deploys, is measured and is torn down (Serve too: its HTTP options are per cluster).
            with JudgeEndpoint(cfg.serve, cfg.judge.model) as endpoint:
                results[f"route ({front} front)"] = _load(endpoint.url, seconds)
        ray.shutdown()
    base = results["backend"]["sequential"]
    fronts = {}
    for name, r in results.items():
        if name == "backend":
            continue
        fronts[name] = {
            "added_p50_ms": round(r["sequential"]["p50_ms"] - base["p50_ms"], 2),
            "added_p99_ms": round(r["sequential"]["p99_ms"] - base["p99_ms"], 2),
            "requests_per_s": r["concurrent"]["requests_per_s"],
        }
        fronts[name]["goal_met"] = fronts[name]["added_p50_ms"] < 5.0 and fronts[name]["requests_per_s"] >= 200
    report = {
        "machine": machine_description(),
        "seconds_per_run": seconds,
        "results": results,
        "fronts": fronts,
        "goal": {"added_p50_ms_below": 5.0, "route_requests_per_s_at_least": 200},
    }
    write_report(out_dir, "route_overhead", report, markdown)
    return report


def _load(url: str, seconds: float) -> dict:
    asyncio.run(measure(url, 4, 2))  # warm up connections and code paths
    return {"sequential": asyncio.run(measure(url, 1, seconds)), "concurrent": asyncio.run(measure(url, 32, seconds))}


def markdown(r: dict) -> str:
    rows = []
    for name, result in r["results"].items():
        for mode in ("sequential", "concurrent"):
            m = result[mode]
            rows.append(f"| {name} | {m['concurrency']} | {m['requests']} | {m['errors']} | {m['requests_per_s']} | {m['p50_ms']} | {m['p99_ms']} |")
    summary = [
        f"- {name}: added latency p50 {f['added_p50_ms']} ms, p99 {f['added_p99_ms']} ms; {f['requests_per_s']} requests/s "
        f"through one ingress replica at concurrency 32 - goal {'met' if f['goal_met'] else 'not met'}."
        for name, f in r["fronts"].items()
    ]
    return "\n".join([
        "# Route overhead",
        "",
        f"Machine: {r['machine']}. Command: `python -m benchmarks.route_overhead`. {r['seconds_per_run']} s per run.",
        "",
        "A stand-in OpenAI server (tests/stub_openai.py, its own process) answers every request at once; the same",
        "closed-loop load goes to it directly (backend) and through the route, whose ingress does pool routing and",
        "calls the server as an `openai` pool member. `proxy` front: Serve's HTTP proxy hands each request to the",
        "ingress replica. `direct` front: the ingress replica listens itself. Load generator, route and server",
        "share the machine's cores. Added latency is the sequential p50/p99 difference to the backend alone.",
        "",
        "| path | concurrency | requests | errors | requests/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Goal: added p50 under 5 ms and at least 200 requests/s through one ingress replica.",
        "",
        *summary,
        "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = parser.parse_args()
    report = run(args.seconds, args.out)
    print(markdown(report))


if __name__ == "__main__":
    main()
