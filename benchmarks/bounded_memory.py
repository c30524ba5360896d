"""Does memory stay flat as the input grows? Peak memory and rows/s of `judgefleet score` at 10k and 100k rows.

    python -m benchmarks.bounded_memory [--rows 10000 100000] [--out benchmarks/reports]

A stand-in judge (tests/stub_openai.py, its own process) answers every request at once, so the
pipeline itself is measured: reading, rendering, Ray Data, the async clients, shard writing and
the summary. Each size runs `judgefleet score` in a fresh process with its own local Ray; a
sampler reads the resident set of the driver and of every process under it (Ray's workers,
raylet, GCS, object store) every 0.5 s. Writes bounded_memory.json and bounded_memory.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.common import REPO, machine_description, stub_judge, write_report

RUBRIC = {"criteria": "Is the answer correct and complete?",
          **{f"score{i}_description": f"The answer is at level {i} of 5." for i in range(1, 6)}}
SETTINGS = ["judge.model=stub-judge", "judge.clients=2", "judge.max_in_flight=64", "sampling.num_samples=3",
            "sampling.max_tokens=64", "output.shard_rows=5000", "output.group_by=[]", "ray.num_cpus=8"]


def write_rows(path: Path, rows: int) -> None:
    """Synthetic Prometheus rows of realistic size (~1 KB each), every one different."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({
                "id": f"row-{i}", "instruction": f"Question {i}: explain step {i % 97} of the procedure in detail. " * 3,
                "response": f"Answer {i}: the step works as follows, with an example. " * 6,
                "reference_answer": f"Reference {i}: the step, its purpose and an example. " * 4, "rubric": RUBRIC,
            }) + "\n")


class TreeSampler:
    """Peak memory of a process and its descendants, sampled in a thread.

    Per sample: the resident set (RSS) of the driver and of the processes under it, and their
    unique set (USS: pages no other process maps - not the shared object store nor libraries),
    also per kind of process (driver, gcs_server, raylet, each ray:: worker name).
    """

    def __init__(self, pid: int, interval_s: float = 0.5):
        self.root = psutil.Process(pid)
        self.interval_s = interval_s
        self.driver = self.others = self.total = self.total_uss = 0
        self.by_kind: dict = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = uss = driver = 0
            kinds: dict = {}
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    kind = "driver" if proc.pid == self.root.pid else _kind(proc)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, uss = rss + info.rss, uss + info.uss
                driver = info.rss if kind == "driver" else driver
                kinds[kind] = kinds.get(kind, 0) + info.uss
            self.driver = max(self.driver, driver)
            self.others = max(self.others, rss - driver)
            self.total = max(self.total, rss)
            self.total_uss = max(self.total_uss, uss)
            for kind, value in kinds.items():
                self.by_kind[kind] = max(self.by_kind.get(kind, 0), value)


def _kind(proc: psutil.Process) -> str:
    title = (proc.cmdline() or [proc.name()])[0]
    if title.startswith("ray::"):  # ray::Actor.method while it runs a method: one kind per actor
        return title.split()[0].split("(")[0].split(".")[0].split("->")[0]
    return proc.name()


def measure(rows: int, stub_url: str, work: Path) -> dict:
    data = work / f"rows-{rows}.jsonl"
    write_rows(data, rows)
    out = work / f"out-{rows}"
    cmd = [sys.executable, "-m", "jobs.cli", "score", str(REPO / "conf" / "quickstart.yaml"), f"judge.url={stub_url}",
           f"dataset.path={data}", f"output.dir={out}", "tracking.mode=disabled", *SETTINGS]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with TreeSampler(proc.pid) as sampler:
        _, stderr = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"judgefleet score failed on {rows} rows:\n{stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    mib = 2 ** 20
    return {
        "rows": rows,
        "scored": summary["scored"],
        "output_rows": sum(json.loads(m.read_text())["rows"] for m in (out / "scores").glob("*.manifest.json")),
        "scoring_s": summary["wall_time_s"],
        "total_s": round(time.perf_counter() - started, 1),
        "rows_per_s": summary["rows_per_s"],
        "peak_driver_mib": round(sampler.driver / mib, 1),
        "peak_ray_processes_mib": round(sampler.others / mib, 1),
        "peak_total_mib": round(sampler.total / mib, 1),
        "peak_total_uss_mib": round(sampler.total_uss / mib, 1),
        "peak_uss_mib_by_process": {k: round(v / mib, 1) for k, v in sorted(sampler.by_kind.items())},
    }


def run(sizes, out_dir: Path) -> dict:
    with stub_judge("--as-route") as stub_url, tempfile.TemporaryDirectory(prefix="judgefleet-bounded-") as tmp:
        results = [measure(n, stub_url, Path(tmp)) for n in sizes]
    small, large = results[0], results[-1]
    growth = {k: round(large[k] / small[k] - 1, 3) for k in ("peak_driver_mib", "peak_ray_processes_mib", "peak_total_mib")}
    report = {
        "machine": machine_description(),
        "settings": SETTINGS,
        "results": results,
        "growth": growth,
        "goal": {"peak_growth_below": 0.20, "rows_per_s_at_least": 500},
        "goal_met": {"memory": all(g < 0.20 for g in growth.values()),
                     "throughput": min(r["rows_per_s"] for r in results) >= 500},
    }
    write_report(out_dir, "bounded_memory", report, markdown)
    return report


def markdown(r: dict) -> str:
    rows = [f"| {x['rows']:,} | {x['output_rows']:,} | {x['scored']:,} | {x['scoring_s']} | {x['rows_per_s']} | "
            f"{x['peak_driver_mib']} | {x['peak_ray_processes_mib']} | {x['peak_total_mib']} | {x['peak_total_uss_mib']} |"
            for x in r["results"]]
    kinds = [_merged_kinds(x["peak_uss_mib_by_process"]) for x in r["results"]]
    by_kind = [f"| {k} | " + " | ".join(str(m.get(k, "-")) for m in kinds) + " |" for k in sorted(set().union(*kinds))]
    g = r["growth"]
    return "\n".join([
        "# Bounded memory",
        "",
        f"Machine: {r['machine']}. Command: `python -m benchmarks.bounded_memory`.",
        "",
        "`judgefleet score` on synthetic rows (~1 KB each, 3 samples a row) against a stand-in judge that answers at",
        "once and, like judgefleet's route, names its replica, so each row costs two requests: the feedback (n=3)",
        "and one verdict request for the three samples (tests/stub_openai.py --as-route, its own process). The",
        "pipeline itself is measured: reading, rendering, Ray Data, the async clients, shard writing, the summary.",
        "Settings: " + ", ".join(f"`{s}`" for s in r["settings"]) + ".",
        "Peak memory is the largest total seen, sampled every 0.5 s, over the driver and the processes under it",
        "(the local Ray: GCS, raylet, workers, object store). RSS counts shared pages (libraries, the object",
        "store) once per process that touched them; USS counts only pages private to each process.",
        "",
        "| input rows | output rows | scored | scoring s | rows/s | driver peak RSS MiB | Ray processes peak RSS MiB | total peak RSS MiB | total peak USS MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Growth of the peaks from the smallest to the largest input: driver {100 * g['peak_driver_mib']:+.1f}%, "
        f"Ray processes {100 * g['peak_ray_processes_mib']:+.1f}%, total {100 * g['peak_total_mib']:+.1f}%.",
        "",
        f"Goal: peaks grow less than 20% ({'met' if r['goal_met']['memory'] else 'not met'}); at least 500 rows/s "
        f"({'met' if r['goal_met']['throughput'] else 'not met'}).",
        "",
        "Peak USS by process (MiB):",
        "",
        "| process | " + " | ".join(f"{x['rows']:,} rows" for x in r["results"]) + " |",
        "| --- |" + " --- |" * len(r["results"]),
        *by_kind,
        "",
        "What kept it flat: Ray Data hands rows on a block at a time, and at its default 128 MiB target block",
        "size the single read task gathered rows into one block before passing any on (its memory grew ~3 KB a",
        "row: 174 MiB at 10k rows, 457 MiB at 100k). The job sets 256 KiB blocks (tens of Prometheus rows, so a",
        "slow judge's rows also reach disk a few dozen at a time) and caps read-ahead with `ray.data_memory_mb`",
        "(64). Block size trades speed here: 64 KiB blocks made 689/849 rows/s, 1 MiB 1113/1566. The clients",
        "moved from httpx to aiohttp: 367 -> 931 rows/s at 10k rows, the client actors having been the bottleneck.",
        "",
    ])


def _merged_kinds(peaks: dict) -> dict:
    merged: dict = {}
    for kind, mib in peaks.items():
        key = kind.split(".")[0].split("->")[0] if kind.startswith("ray::") else kind
        merged[key] = max(merged.get(key, 0), mib)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = parser.parse_args()
    print(markdown(run(args.rows, args.out)))


if __name__ == "__main__":
    main()
