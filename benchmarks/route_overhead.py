"""What the route itself costs: requests/s and added latency of ingress + pool routing.

    python -m benchmarks.route_overhead [--seconds 20] [--out benchmarks/reports]

A trivial backend (the stand-in OpenAI server of tests/stub_openai.py, in its own process)
answers instantly. The same load is sent to it directly, then through judgefleet's route (Serve
proxy -> ingress -> pool routing -> the backend as an `openai` pool member). The difference is
the route's overhead. Writes route_overhead.json and route_overhead.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
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
    from jobs.endpoint import deploy_route

    stub = subprocess.Popen([sys.executable, str(REPO / "tests" / "stub_openai.py")], stdout=subprocess.PIPE, text=True)
    try:
        stub_url = json.loads(stub.stdout.readline())["url"]
        ray.init(address="local", num_cpus=8, include_dashboard=False, logging_level=logging.WARNING)
        port = free_port()
        cfg = load_config(REPO / "conf" / "quickstart.yaml", [
            f"serve.port={port}", "judge.model=bench-judge", "serve.models=[{}]", "serve.models.0.id=bench-judge",
            "serve.models.0.name=stub", "serve.models.0.engine=openai", f"serve.models.0.model={stub_url}",
            "serve.models.0.engine_kwargs={model: stub-judge}", "serve.models.0.max_ongoing_requests=512",
        ])
        route_url = deploy_route(cfg).url
        results = {}
        for name, url in (("direct", stub_url), ("route", route_url)):
            asyncio.run(measure(url, 4, 2))  # warm up connections and code paths
            results[name] = {
                "sequential": asyncio.run(measure(url, 1, seconds)),
                "concurrent": asyncio.run(measure(url, 32, seconds)),
            }
        ray.shutdown()
    finally:
        stub.terminate()
        stub.wait(10)
    added_p50 = results["route"]["sequential"]["p50_ms"] - results["direct"]["sequential"]["p50_ms"]
    added_p99 = results["route"]["sequential"]["p99_ms"] - results["direct"]["sequential"]["p99_ms"]
    report = {
        "machine": f"{os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}",
        "seconds_per_run": seconds,
        "results": results,
        "added_latency_p50_ms": round(added_p50, 2),
        "added_latency_p99_ms": round(added_p99, 2),
        "route_requests_per_s": results["route"]["concurrent"]["requests_per_s"],
        "goal": {"added_p50_ms_below": 5.0, "route_requests_per_s_at_least": 200},
    }
    report["goal_met"] = report["added_latency_p50_ms"] < 5.0 and report["route_requests_per_s"] >= 200
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "route_overhead.json").write_text(json.dumps(report, indent=2))
    (out_dir / "route_overhead.md").write_text(markdown(report))
    return report


def markdown(r: dict) -> str:
    rows = []
    for name in ("direct", "route"):
        for mode in ("sequential", "concurrent"):
            m = r["results"][name][mode]
            rows.append(f"| {name} | {m['concurrency']} | {m['requests']} | {m['errors']} | {m['requests_per_s']} | {m['p50_ms']} | {m['p99_ms']} |")
    return "\n".join([
        "# Route overhead",
        "",
        f"Machine: {r['machine']}. Command: `python -m benchmarks.route_overhead`. {r['seconds_per_run']} s per run.",
        "",
        "A stand-in OpenAI server (tests/stub_openai.py, its own process) answers every request at once; the same",
        "closed-loop load goes to it directly and through the route (Serve proxy, ingress, pool routing, the",
        "server as an `openai` pool member). Load generator, route and server share the machine's cores.",
        "",
        "| path | concurrency | requests | errors | requests/s | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Added latency (sequential): p50 {r['added_latency_p50_ms']} ms, p99 {r['added_latency_p99_ms']} ms.",
        f"Through one ingress replica: {r['route_requests_per_s']} requests/s at concurrency 32.",
        f"Goal (added p50 under 5 ms, at least 200 requests/s): {'met' if r['goal_met'] else 'not met'}.",
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
