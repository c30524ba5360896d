"""Does a mixed pool deliver the sum of its members? The route with GPU-like and CPU-like stand-ins.

    python -m benchmarks.fleet [--steady-s 45] [--standalone-s 60] [--mixes 1+4 2+8 2+8-death]
                               [--out benchmarks/reports]

Stand-in members (benchmarks/fleet_member.py, one process each, on loopback) speak the OpenAI
/v1/completions protocol with an engine's capacity and a latency computed from tokens: a
"GPU vLLM-like" member works on 32 requests at once, a "CPU llama.cpp-like" one on 4 at 5x the
latency; what is beyond its slots waits in its queue.

1. Standalone: each member is driven alone, directly, by judgefleet's own row judge and client
   (feedback with n=3, then one score step for the three) at 1.5x its slots; its rows/s is read
   from its own log over a steady window.
2. Pool: for each mix, a real `judgefleet score` job (its own process and local Ray) deploys the
   route with the stand-ins as `openai` members and streams synthetic Prometheus rows through it.
   The pool's rows/s over the steady window (warm-up skipped, until the job sent its last row) is
   set against the sum of the members' standalone rows/s (a member that died counts while it
   lived). From every member's log of running/queued requests: how long a member had free slots
   while another had requests waiting. In the `death` mix one member is killed (SIGKILL) when
   half the rows are done; the rows it held must be scored by the others.

Writes fleet.json and fleet.md. Every process and Ray it starts, it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import pyarrow.parquet as pq
import yaml

from benchmarks.common import REPO, machine_description, write_report
from benchmarks.fleet_analysis import analyse_pool, markdown, standalone_rate
from benchmarks.fleet_member import PROFILES, Profile

MODEL = "fleet-judge"
SAMPLES, MAX_TOKENS = 3, 128
PROMPT_TOKENS = 880  # the rendered prompt of a synthetic row, about (vicuna's are ~880)


@dataclass(frozen=True)
class Mix:
    name: str
    gpu: int
    cpu: int
    kill: Optional[str] = None  # the member killed when half the rows are done

    def members(self) -> List[str]:
        return [f"gpu-{i + 1}" for i in range(self.gpu)] + [f"cpu-{i + 1}" for i in range(self.cpu)]


MIXES = {
    "1+4": Mix("1 GPU + 4 CPU", 1, 4),
    "2+8": Mix("2 GPU + 8 CPU", 2, 8),
    "2+8-death": Mix("2 GPU + 8 CPU, gpu-2 killed at half", 2, 8, kill="gpu-2"),
    "1+1": Mix("1 GPU + 1 CPU", 1, 1),  # for tests
    "1+1-death": Mix("1 GPU + 1 CPU, cpu-1 killed at half", 1, 1, kill="cpu-1"),
}


@dataclass(frozen=True)
class JobSettings:
    """How the score job and the route are sized against the pool's slots."""

    in_flight_per_slot: float = 2.0  # judge.max_in_flight = this x the pool's slots
    queue_per_slot: float = 1.0  # each member's max_queued_requests = this x its slots
    clients: int = 8  # judge.clients

    def max_in_flight(self, slots: int) -> int:
        return max(self.clients, math.ceil(self.in_flight_per_slot * slots))


# -- stand-in processes -----------------------------------------------------------------------
class MemberProcess:
    """One stand-in (benchmarks.fleet_member) in its own process, asked over its stdin."""

    def __init__(self, name: str, profile: Profile, seed: int):
        self.name, self.profile = name, profile
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fleet_member", "--profile", name.split("-")[0],
             "--time-scale", str(profile.time_scale), "--seed", str(seed)],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.url = json.loads(self.proc.stdout.readline())["url"]
        self._lock = threading.Lock()
        self.final_log: Optional[dict] = None
        self.killed_at: Optional[float] = None

    def ask(self, command: str) -> dict:
        with self._lock:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
            return json.loads(self.proc.stdout.readline())

    def kill(self) -> dict:
        """Its log, then SIGKILL: its connections reset under the requests it held."""
        self.final_log = self.ask("log")
        held = self.ask("state")
        self.proc.send_signal(signal.SIGKILL)
        self.killed_at = time.monotonic()
        self.proc.wait(10)
        return {"member": self.name, "t": self.killed_at, "running": held["running"], "queued": held["queued"],
                "rows_done": held["rows"]}

    def stop(self) -> dict:
        if self.final_log is None:
            self.final_log = self.ask("log")
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.final_log


def start_members(names: List[str], time_scale: float) -> Dict[str, MemberProcess]:
    members: Dict[str, MemberProcess] = {}
    try:
        for seed, name in enumerate(names):
            members[name] = MemberProcess(name, replace(PROFILES[name.split("-")[0]], time_scale=time_scale), seed)
    except BaseException:
        stop_members(members)
        raise
    return members


def stop_members(members: Dict[str, MemberProcess]) -> Dict[str, dict]:
    logs = {}
    for name, m in members.items():
        try:
            logs[name] = m.stop()
        except Exception:  # noqa: BLE001 - a member that is gone already: end it, keep going
            m.proc.kill()
    return logs


# -- data -------------------------------------------------------------------------------------
RUBRIC = {"criteria": "Is the answer correct, complete and clearly explained for the question asked?",
          **{f"score{i}_description": f"The answer is at level {i} of 5: " + "it covers the points asked. " * i
             for i in range(1, 6)}}


def write_rows(path: Path, rows: int) -> None:
    """Synthetic Prometheus rows whose rendered prompt is ~880 tokens (3,500 characters), each different."""
    with open(path, "w") as f:
        for i in range(rows):
            f.write(json.dumps({
                "id": f"row-{i}",
                "instruction": f"Question {i}: explain step {i % 97} of the procedure in detail, with an example. " * 5,
                "response": f"Answer {i}: the step works as follows; first the input is checked, then it is used. " * 14,
                "reference_answer": f"Reference {i}: the step, its purpose, its input and a worked example. " * 6,
                "rubric": RUBRIC,
            }) + "\n")


def job_config(path: Path, members: Dict[str, MemberProcess], data: Path, out: Path, job: JobSettings) -> None:
    slots = sum(m.profile.slots for m in members.values())
    models = [{"id": MODEL, "name": name, "engine": "openai", "model": m.url, "context_length": 4096,
               "max_ongoing_requests": m.profile.slots,
               "max_queued_requests": math.ceil(job.queue_per_slot * m.profile.slots),
               "engine_kwargs": {"model": MODEL}} for name, m in members.items()]
    cfg = {
        "judge": {"url": None, "model": MODEL, "mode": "absolute", "api": "completions",
                  "max_in_flight": job.max_in_flight(slots), "clients": job.clients},
        "serve": {"host": "127.0.0.1", "front": "direct", "models": models},
        "dataset": {"path": str(data), "id_field": "id"},
        "sampling": {"num_samples": SAMPLES, "max_tokens": MAX_TOKENS, "temperature": 1.0, "top_p": 0.9, "seed": 0},
        "tracking": {"mode": "disabled"},
        "output": {"dir": str(out), "shard_rows": 1000, "group_by": []},
        "ray": {"num_cpus": 8},
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))


def check_output(out: Path, rows: int) -> dict:
    """Rows in the shards, unscored rows and rows with errors, and whether every input id is there once."""
    ids, unscored, errored = [], 0, 0
    for shard in sorted((out / "scores").glob("part-*.parquet")):
        t = pq.read_table(shard, columns=["id", "score", "errors"]).to_pydict()
        ids += t["id"]
        unscored += sum(s is None for s in t["score"])
        errored += sum(bool(e) for e in t["errors"])
    return {"rows_in": rows, "rows_out": len(ids), "unscored": unscored, "rows_with_errors": errored,
            "ids_match": sorted(ids) == sorted(f"row-{i}" for i in range(rows))}


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


# -- 1. standalone ----------------------------------------------------------------------------
async def _drive(members: Dict[str, MemberProcess], prompts: List[str], seconds: float) -> None:
    """Each member alone, at 1.5x its slots, with judgefleet's row judge and HTTP client."""
    from jobs.client.http import OpenAIClient
    from jobs.judge.row_judge import JudgeSettings, RowJudge

    settings = JudgeSettings(model=MODEL, num_samples=SAMPLES, max_tokens=MAX_TOKENS, route=True)
    deadline = time.monotonic() + seconds
    clients = []

    async def worker(judge: RowJudge, start: int, step: int) -> None:
        i = start
        while time.monotonic() < deadline:
            verdict = await judge.judge(prompts[i % len(prompts)], f"row-{i}")
            if verdict.errors:
                raise RuntimeError(f"standalone row failed: {verdict.errors[0].message}")
            i += step

    tasks = []
    for k, m in enumerate(members.values()):
        workers = math.ceil(1.5 * m.profile.slots)
        client = OpenAIClient(m.url, max_in_flight=workers, max_retries=0)
        clients.append(client)
        judge = RowJudge(client, settings)
        # Each member gets its own rows (offset), so no prompt is in its cache before it is sent.
        tasks += [worker(judge, 100_000 * k + w, workers) for w in range(workers)]
    try:
        await asyncio.gather(*tasks)
    finally:
        for client in clients:
            await client.aclose()


def standalone(names: List[str], seconds: float, time_scale: float, work: Path) -> dict:
    from jobs.config import load_config
    from jobs.runtime.pipeline import prompt_columns

    data = work / "standalone.jsonl"
    write_rows(data, 2000)
    cfg = load_config(REPO / "conf" / "quickstart.yaml", [f"dataset.path={data}", "dataset.id_field=id"])
    prompts = [prompt_columns(json.loads(line), cfg.dataset, "absolute")["_prompt"] for line in data.open()]
    load_before = loadavg()
    members = start_members(names, time_scale)
    try:
        started = time.monotonic()
        asyncio.run(_drive(members, prompts, seconds))
        ended = time.monotonic()
    finally:
        logs = stop_members(members)
    (work / "standalone_logs.json").write_text(json.dumps(logs))
    # The window ends when the drivers stop starting rows: after that the members drain, not full.
    warmup, stop = _warmup(time_scale), started + seconds
    result = {name: standalone_rate(logs[name], started + warmup, stop) for name in names}
    return {"seconds": round(ended - started, 1), "window_s": round(seconds - warmup, 1),
            "loadavg": [load_before, loadavg()], "prompt_chars": sum(map(len, prompts)) // len(prompts),
            "members": result}


def _warmup(time_scale: float) -> float:
    """Skipped at the start of every measurement: 1.5 rows of the slowest member."""
    return 1.5 * max(p.row_seconds(PROMPT_TOKENS, SAMPLES, MAX_TOKENS) for p in PROFILES.values()) * time_scale


# -- 2. the pool behind the route -------------------------------------------------------------
def pool_run(key: str, mix: Mix, rows: int, job: JobSettings, rates: Dict[str, float], time_scale: float,
             work: Path, timeout_s: float) -> dict:
    run_dir = work / key
    run_dir.mkdir()
    data, out, cfg_path = run_dir / "rows.jsonl", run_dir / "out", run_dir / "job.yaml"
    write_rows(data, rows)
    load_before = loadavg()
    members = start_members(mix.members(), time_scale)
    kill_info, samples = None, []
    try:
        job_config(cfg_path, members, data, out, job)
        log_path = run_dir / "score.log"
        with open(log_path, "w") as log:
            proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "score", str(cfg_path)], cwd=REPO,
                                    stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, RAY_DEDUP_LOGS="0"))
            deadline = time.monotonic() + timeout_s
            try:
                while proc.poll() is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"{mix.name}: the score job ran past {timeout_s} s; see {log_path}")
                    states = {n: m.ask("state") for n, m in members.items() if m.killed_at is None}
                    samples.append({"t": time.monotonic(), **{n: [s["running"], s["queued"]] for n, s in states.items()}})
                    if mix.kill and kill_info is None and sum(s["rows"] for s in states.values()) >= rows // 2:
                        kill_info = members[mix.kill].kill()
                    time.sleep(0.25)
            finally:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)  # the driver alone: it shuts its Ray down
                    proc.wait(60)
        if proc.returncode != 0:
            raise RuntimeError(f"{mix.name}: judgefleet score failed:\n{log_path.read_text()[-3000:]}")
    finally:
        logs = stop_members(members)
        (run_dir / "member_logs.json").write_text(json.dumps({"logs": logs, "kill": kill_info, "samples": samples}))
    summary = json.loads((out / "summary.json").read_text())
    slots = sum(m.profile.slots for m in members.values())
    result = analyse_pool(logs, rates, warmup_s=_warmup(time_scale), kill=kill_info)
    result.update(
        mix=mix.name, members=mix.members(), slots=slots, rows=rows, loadavg=[load_before, loadavg()],
        job={"max_in_flight": job.max_in_flight(slots), "clients": job.clients,
             "max_queued_per_member": {n: math.ceil(job.queue_per_slot * m.profile.slots) for n, m in members.items()}},
        output=check_output(out, rows),
        summary={k: summary.get(k) for k in ("rows", "scored", "rows_with_errors", "errors_by_reason", "judge_members",
                                             "rows_per_s", "samples_per_s", "wall_time_s", "total_time_s")},
        killed=kill_info and {k: v for k, v in kill_info.items() if k != "t"},
        state_samples=len(samples),
    )
    return result


def rows_for(mix: Mix, steady_s: float, job: JobSettings, time_scale: float) -> int:
    """Rows enough for `steady_s` of the pool at full speed, after the warm-up, plus the tail."""
    expected = sum(PROFILES[n.split("-")[0]].rows_per_s(PROMPT_TOKENS, SAMPLES, MAX_TOKENS) for n in mix.members())
    slots = sum(PROFILES[n.split("-")[0]].slots for n in mix.members())
    return math.ceil(expected / time_scale * (steady_s + _warmup(time_scale))) + 2 * job.max_in_flight(slots)


def run(mixes: List[str], steady_s: float, standalone_s: float, out_dir: Optional[Path], job: JobSettings,
        time_scale: float = 1.0, timeout_s: float = 600.0, command: Optional[str] = None,
        keep: Optional[Path] = None, compare_clients: Optional[int] = None) -> dict:
    """`keep`: a directory to keep the members' logs, the job configs and their output in.
    `compare_clients`: also run the first mix with this many `judge.clients` (before/after)."""
    names = sorted({n for k in mixes for n in MIXES[k].members()}, key=lambda n: (n[0] != "g", n))
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if keep is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="judgefleet-fleet-")))
        else:
            work = keep / time.strftime("%Y%m%d-%H%M%S")
            work.mkdir(parents=True)
        alone = standalone(names, standalone_s, time_scale, work)
        rates = {n: r["rows_per_s"] for n, r in alone["members"].items()}
        results = {}
        for key in mixes:
            mix = MIXES[key]
            results[key] = pool_run(key, mix, rows_for(mix, steady_s, job, time_scale), job, rates, time_scale, work,
                                    timeout_s)
        compared = {}
        if compare_clients:
            other, mix = replace(job, clients=compare_clients), MIXES[mixes[0]]
            key = f"{mixes[0]}@clients={compare_clients}"
            compared[key] = pool_run(key, replace(mix, name=f"{mix.name}, judge.clients={compare_clients}"),
                                     rows_for(mix, steady_s, job, time_scale), other, rates, time_scale, work,
                                     timeout_s)
    report = {
        "machine": machine_description(),
        "command": command,
        "model": {k: {"kind": p.kind, "slots": p.slots, "prefill_tok_s": p.prefill_tok_s,
                      "decode_tok_s": p.decode_tok_s, "cache_tokens": p.cache_tokens, "describe": p.describe,
                      "row_s": round(p.row_seconds(PROMPT_TOKENS, SAMPLES, MAX_TOKENS) * time_scale, 3),
                      "rows_per_s": round(p.rows_per_s(PROMPT_TOKENS, SAMPLES, MAX_TOKENS) / time_scale, 3)}
                  for k, p in PROFILES.items()},
        "time_scale": time_scale,
        "rows": {"samples": SAMPLES, "max_tokens": MAX_TOKENS, "prompt_chars": alone["prompt_chars"]},
        "job": {"in_flight_per_slot": job.in_flight_per_slot, "queue_per_slot": job.queue_per_slot,
                "clients": job.clients},
        "standalone": alone,
        "mixes": results,
        "compared": compared,
        "goal": {"ratio_at_least": 0.9},
        "goal_met": {k: r["ratio"] >= 0.9 and r["output"]["rows_out"] == r["rows"] and r["output"]["ids_match"]
                     and not r["output"]["unscored"] and not r["output"]["rows_with_errors"]
                     for k, r in results.items()},
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    if out_dir is not None:
        write_report(out_dir, "fleet", report, markdown)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mixes", nargs="+", default=["1+4", "2+8", "2+8-death"], choices=sorted(MIXES))
    parser.add_argument("--steady-s", type=float, default=45.0, help="seconds of each mix at full speed")
    parser.add_argument("--standalone-s", type=float, default=60.0)
    parser.add_argument("--in-flight-per-slot", type=float, default=JobSettings.in_flight_per_slot)
    parser.add_argument("--queue-per-slot", type=float, default=JobSettings.queue_per_slot)
    parser.add_argument("--clients", type=int, default=JobSettings.clients)
    parser.add_argument("--time-scale", type=float, default=1.0, help="< 1: every latency shorter (tests)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    parser.add_argument("--compare-clients", type=int, help="also run the first mix with this judge.clients")
    parser.add_argument("--keep", type=Path, help="keep the members' logs and the jobs' output under this directory")
    args = parser.parse_args()
    job = JobSettings(args.in_flight_per_slot, args.queue_per_slot, args.clients)
    command = "python -m benchmarks.fleet" + "".join(f" {a}" for a in sys.argv[1:])
    print(markdown(run(args.mixes, args.steady_s, args.standalone_s, args.out, job, args.time_scale, command=command,
                       keep=args.keep, compare_clients=args.compare_clients)))


if __name__ == "__main__":
    main()
