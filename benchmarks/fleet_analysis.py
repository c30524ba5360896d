"""What `benchmarks.fleet` reads from its members' logs, and the report it writes. Pure Python.

A member's log (`benchmarks.fleet_member.FleetMember.log`) holds its profile, every change of
its running/queued counts as (t, running, queued), and every answered request with its kind
("feedback", or "score": the last request of a row) and times. All times are `time.monotonic()`
of one machine, so the logs of different processes line up.
"""

from __future__ import annotations

from typing import Dict, List, Optional


def _rows(log: dict, start: float, end: float) -> int:
    return sum(1 for f in log["finished"] if f["kind"] == "score" and start <= f["ended"] <= end)


def standalone_rate(log: dict, start: float, end: float) -> dict:
    """A member driven alone: rows/s (score steps answered) between start and end."""
    rows = _rows(log, start, end)
    busy = _busy_slot_s(log["events"], start, end)
    return {"rows": rows, "rows_per_s": round(rows / (end - start), 4),
            "utilization": round(busy / (log["profile"]["slots"] * (end - start)), 3)}


def _busy_slot_s(events: List[list], start: float, end: float) -> float:
    busy = 0.0
    for (t, running, _), (t2, _, _) in zip(events, events[1:] + [[end, 0, 0]]):
        lo, hi = max(t, start), min(t2, end)
        if hi > lo:
            busy += running * (hi - lo)
    return busy


def steady_window(logs: Dict[str, dict], warmup_s: float) -> tuple:
    """From the first request + warm-up to the last feedback request (the job's last new row):
    while the job had rows to send, so the pool could be full."""
    first = min(f["arrived"] for log in logs.values() for f in log["finished"])
    last = max(f["arrived"] for log in logs.values() for f in log["finished"] if f["kind"] == "feedback")
    start = first + warmup_s
    if start >= last:  # a run too short for the warm-up: keep its last two thirds
        start = first + (last - first) / 3
    return start, last


def analyse_pool(logs: Dict[str, dict], standalone: Dict[str, float], warmup_s: float,
                 kill: Optional[dict] = None) -> dict:
    """The pool's rows/s against the sum of its members' standalone rows/s, and its idle capacity."""
    start, end = steady_window(logs, warmup_s)
    span = end - start
    died = {kill["member"]: kill["t"]} if kill else {}
    members, expected = {}, 0.0
    for name, log in logs.items():
        alive_until = min(died.get(name, end), end)
        alive = max(0.0, alive_until - start) / span
        expected += standalone[name] * alive
        slots = log["profile"]["slots"]
        scores = [f for f in log["finished"] if f["kind"] == "score"]
        members[name] = {
            "kind": log["profile"]["kind"],
            "slots": slots,
            "rows": len(scores),
            "feedbacks": sum(1 for f in log["finished"] if f["kind"] == "feedback"),
            "rows_in_window": _rows(log, start, end),
            "rows_per_s": round(_rows(log, start, end) / span, 4),
            "standalone_rows_per_s": standalone[name],
            "alive_fraction": round(alive, 3),
            "utilization": round(_busy_slot_s(log["events"], start, alive_until) / (slots * span * alive), 3)
            if alive else None,
            # score steps that prefilled the whole prompt again: their feedback was written elsewhere
            # (on a member that died, or that was full when the score step came)
            "score_steps_without_cache": sum(1 for f in scores if f["prompt_tokens"] > 100),
            "score_steps_without_cache_after_kill": sum(1 for f in scores if f["prompt_tokens"] > 100
                                                        and kill and f["started"] >= kill["t"]),
        }
    rows = sum(m["rows_in_window"] for m in members.values())
    pool = rows / span
    idle = idle_while_queued(logs, start, end, died)
    return {
        "window_s": round(span, 1),
        "pool_rows_per_s": round(pool, 3),
        "sum_standalone_rows_per_s": round(expected, 3),
        "ratio": round(pool / expected, 3) if expected else None,
        "rows_answered": sum(m["rows"] for m in members.values()),
        **idle,
        "per_member": members,
    }


def idle_while_queued(logs: Dict[str, dict], start: float, end: float, died: Dict[str, float]) -> dict:
    """Between start and end: seconds some live member had nothing running while another had
    requests waiting; and slot-seconds free at members while another had requests waiting, as a
    share of the pool's slot-seconds."""
    merged = sorted((e[0], name, e[1], e[2]) for name, log in logs.items() for e in log["events"])
    slots = {name: log["profile"]["slots"] for name, log in logs.items()}
    running = {name: 0 for name in logs}
    queued = {name: 0 for name in logs}
    idle_s = free_slot_s = capacity_s = queued_s = 0.0
    for (t, name, r, q), nxt in zip(merged, merged[1:] + [(end, None, 0, 0)]):
        running[name], queued[name] = r, q
        lo, hi = max(t, start), min(nxt[0], end)
        if hi <= lo:
            continue
        dt = hi - lo
        live = [m for m in logs if died.get(m, float("inf")) > lo]
        waiting = [m for m in live if queued[m] > 0]
        capacity_s += sum(slots[m] for m in live) * dt
        if waiting:
            queued_s += dt
        others_wait = {m: any(w != m for w in waiting) for m in live}
        if any(running[m] == 0 and others_wait[m] for m in live):
            idle_s += dt
        free_slot_s += sum(slots[m] - running[m] for m in live if running[m] < slots[m] and others_wait[m]) * dt
    return {
        "idle_while_queued_s": round(idle_s, 2),
        "free_slots_while_queued_pct": round(100 * free_slot_s / capacity_s, 2) if capacity_s else 0.0,
        "some_queue_s": round(queued_s, 1),
    }


# -- the report -------------------------------------------------------------------------------
def markdown(r: dict) -> str:
    gpu, cpu = r["model"]["gpu"], r["model"]["cpu"]
    alone = r["standalone"]["members"]
    by_kind: Dict[str, List[float]] = {}
    for name, m in alone.items():
        by_kind.setdefault(name.split("-")[0], []).append(m["rows_per_s"])
    alone_line = "; ".join(f"{k.upper()} members {min(v):.2f}-{max(v):.2f} rows/s (mean {sum(v) / len(v):.2f})"
                           for k, v in by_kind.items())
    rows = []
    for m in [*r["mixes"].values(), *r.get("compared", {}).values()]:
        o = m["output"]
        errors = o["rows_with_errors"] + o["unscored"]
        rows.append(
            f"| {m['mix']} | {m['sum_standalone_rows_per_s']:.2f} | {m['pool_rows_per_s']:.2f} | **{m['ratio']:.3f}** | "
            f"{m['idle_while_queued_s']} s / {m['free_slots_while_queued_pct']}% | {m['window_s']} s | "
            f"{o['rows_in']} / {o['rows_out']}{'' if o['ids_match'] else ' (ids differ)'} | {errors} | "
            f"{m['job']['max_in_flight']} / {m['job']['clients']} | {m['loadavg'][0]} / {m['loadavg'][1]} |")
    details = []
    for m in [*r["mixes"].values(), *r.get("compared", {}).values()]:
        per = ", ".join(f"{n} {x['utilization']}" for n, x in m["per_member"].items())
        line = f"- **{m['mix']}**: slot utilization in the window: {per}."
        if m.get("killed"):
            k = m["killed"]
            again = sum(x["score_steps_without_cache_after_kill"] for n, x in m["per_member"].items() if n != k["member"])
            line += (f" {k['member']} was killed (SIGKILL) holding {k['running']} running and {k['queued']} queued "
                     f"requests ({k['rows_done']} rows finished there); the route marked it down and sent them to the "
                     f"others; after the kill {again} score steps prefilled their whole prompt again (their feedback "
                     "was in the dead member's cache, or their preferred member was full).")
            o = m["output"]
            if o["ids_match"] and not o["unscored"] and not o["rows_with_errors"]:
                line += f" All {o['rows_in']} rows came back scored, each once, without errors."
        details.append(line)
    return "\n".join([
        "# A fleet that adds up",
        "",
        f"Machine: {r['machine']}. Command: `{r['command'] or 'python -m benchmarks.fleet'}` ({r['elapsed_s']} s).",
        "",
        "Stand-in members (benchmarks/fleet_member.py, one process each, on loopback) speak the OpenAI",
        "/v1/completions protocol with an engine's capacity and a latency computed from tokens; what is beyond",
        "their slots waits in their own queue, first come first served. A request takes",
        "`new prompt tokens / prefill rate + generated tokens / decode rate` (rates per request while the member",
        "is full, its n samples decoded together); a feedback sample writes 60-100% of max_tokens, a score",
        "step one token per prompt. Prompts are cached in 16-token blocks, the feedback written included, so a",
        "score step at the member that wrote its feedback prefills a few tokens, elsewhere the whole prompt.",
        "",
        f"- GPU vLLM-like: {gpu['describe']}; a row ({r['rows']['samples']} samples x {r['rows']['max_tokens']} "
        f"tokens, ~880-token prompt) takes {gpu['row_s']} s of a slot: {gpu['rows_per_s']} rows/s a member.",
        f"- CPU llama.cpp-like: {cpu['describe']}; a row takes {cpu['row_s']} s of a slot: {cpu['rows_per_s']} rows/s "
        "a member.",
        "",
        "The rates are chosen so the CPU members carry ~13% of a mixed pool: a share large enough that a routing",
        "loss on them would show against the 0.9 goal (with a real 7B judge a GPU replica outruns a CPU node by",
        "two orders of magnitude, and the CPU share would be ~1%).",
        "",
        f"**Standalone** ({r['standalone']['window_s']} s window after warm-up, each member driven directly by",
        "judgefleet's row judge and HTTP client at 1.5x its slots, all members at once; load average "
        f"{r['standalone']['loadavg'][0]} / {r['standalone']['loadavg'][1]}): {alone_line}.",
        "",
        "**Pool**: a real `judgefleet score` job (own process, own local Ray) deploys the route with the",
        "stand-ins as `openai` members (`max_ongoing_requests` = slots, `max_queued_requests` = "
        f"{r['job']['queue_per_slot']} x slots) and streams synthetic rows through it (`judge.max_in_flight` = "
        f"{r['job']['in_flight_per_slot']} x the pool's slots, `judge.clients` = {r['job']['clients']}). Pool rows/s is",
        "counted over the steady window: from the first request plus the warm-up (1.5 rows of a CPU member) to",
        "the job's last new row. Sum of standalone counts a member that died for the time it lived.",
        "Idle-while-queued: seconds a live member had nothing running while another had requests waiting /",
        "slot-seconds free at members while another had requests waiting, as a share of the pool's slot-seconds.",
        "",
        "| mix | sum of standalone rows/s | pool rows/s | ratio | idle while others queue | window | rows in / out "
        "| errors | max_in_flight / clients | load avg before / after |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        *rows,
        "",
        "Samples/s are 3x rows/s. Errors: output rows unscored or with errors (the job's summary agrees).",
        "",
        *details,
        "",
        f"Goal: pool >= 0.9 of the sum, every row scored once: "
        + ", ".join(f"{r['mixes'][k]['mix']} {'met' if v else 'NOT met'}" for k, v in r["goal_met"].items()) + ".",
        "",
        *r.get("notes", []),
    ]) + "\n"
