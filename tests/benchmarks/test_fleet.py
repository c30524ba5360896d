"""benchmarks/fleet.py: the stand-in members behave like engines (slots, a queue, a prefix cache),
the analysis counts what it says, and the whole benchmark still runs (tiny) with rows in = rows out."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace

import aiohttp
import pytest

from benchmarks.fleet_analysis import analyse_pool, idle_while_queued
from benchmarks.fleet_member import PROFILES, FleetMember

PROMPT = "###Task Description:\n" + "".join(f"Line {i} of a long prompt, each one different. " for i in range(80))


def _log(slots, events, finished=()):
    return {"profile": {"slots": slots, "kind": "k"}, "events": [list(e) for e in events], "finished": list(finished)}


def _score(ended, prompt_tokens=5):
    return {"kind": "score", "arrived": ended - 0.1, "started": ended - 0.1, "ended": ended,
            "prompt_tokens": prompt_tokens, "generated": 3}


async def _post(session, url, body):
    async with session.post(url + "/completions", json=body) as r:
        assert r.status == 200
        return await r.json()


def test_member_runs_its_slots_queues_the_rest_and_caches_feedback():
    member = FleetMember(replace(PROFILES["cpu"], slots=2, time_scale=0.02)).start()
    try:
        async def main():
            async with aiohttp.ClientSession() as s:
                feedback = {"model": "m", "prompt": PROMPT, "n": 3, "max_tokens": 32}
                answers = await asyncio.gather(*(_post(s, member.url, dict(feedback, prompt=f"{i}{PROMPT}"))
                                                 for i in range(4)))
                lead = answers[0]["choices"][0]["text"] + "[RESULT] "
                score = {"model": "m", "prompt": [f"0{PROMPT}" + lead] * 3, "max_tokens": 1, "logprobs": 20,
                         "structured_outputs": {"choice": ["1", "2", "3", "4", "5"]}}
                verdict = await _post(s, member.url, score)
                assert len(verdict["choices"]) == 3 and verdict["choices"][0]["text"] == "4"

        asyncio.run(main())
        log = member.log()
    finally:
        member.stop()
    assert max(e[1] for e in log["events"]) == 2  # never more than its slots at once
    assert max(e[2] for e in log["events"]) == 2  # the other two waited in its queue
    feedbacks = [f for f in log["finished"] if f["kind"] == "feedback"]
    (score,) = [f for f in log["finished"] if f["kind"] == "score"]
    assert len(feedbacks) == 4 and all(f["prompt_tokens"] > 200 for f in feedbacks)
    assert score["prompt_tokens"] < 3 * 30  # its feedback was cached: only the tail and the marker
    assert all(f["generated"] <= 3 * 32 for f in feedbacks)


def test_idle_while_queued_counts_free_slots_only_while_another_member_waits():
    logs = {
        # a is full and has 2 waiting from t=1 to t=3
        "a": _log(2, [(0, 2, 0), (1, 2, 2), (3, 2, 0)]),
        # b idles from 0 to 2, runs one of its two slots from 2 to 4
        "b": _log(2, [(0, 0, 0), (2, 1, 0), (4, 0, 0)]),
    }
    out = idle_while_queued(logs, 0.0, 4.0, died={})
    assert out["idle_while_queued_s"] == 1.0  # b idle while a waits: t=1..2
    # free slots of b while a waits: 2 slots x 1 s + 1 slot x 1 s, of 4 slots x 4 s
    assert out["free_slots_while_queued_pct"] == pytest.approx(100 * 3 / 16, abs=0.01)
    # a dead member is not idle
    assert idle_while_queued(logs, 0.0, 4.0, died={"b": 0.5})["idle_while_queued_s"] == 0.0


def test_pool_ratio_counts_a_dead_member_for_the_time_it_lived():
    feedback = [{"kind": "feedback", "arrived": t, "started": t, "ended": t + 1, "prompt_tokens": 800,
                 "generated": 300} for t in (0.0, 10.0)]
    logs = {"a": _log(1, [(0, 1, 0)], feedback + [_score(t) for t in range(1, 11)]),
            "b": _log(1, [(0, 1, 0)], [_score(t, 900) for t in range(1, 6)])}
    out = analyse_pool(logs, {"a": 1.0, "b": 1.0}, warmup_s=0.0, kill={"member": "b", "t": 5.0})
    assert out["window_s"] == 10.0
    assert out["sum_standalone_rows_per_s"] == 1.5  # b lived half the window
    assert out["pool_rows_per_s"] == 1.5 and out["ratio"] == 1.0
    assert out["per_member"]["b"]["score_steps_without_cache"] == 5


@pytest.mark.integration
def test_the_benchmark_runs_tiny_and_every_row_comes_back_scored(tmp_path):
    from benchmarks.fleet import JobSettings, run

    report = run(["1+1-death"], steady_s=4, standalone_s=4, out_dir=tmp_path, job=JobSettings(clients=2),
                 time_scale=0.2, timeout_s=240)
    (mix,) = report["mixes"].values()
    assert mix["output"]["rows_in"] == mix["output"]["rows_out"] == mix["rows"] > 0
    assert mix["output"]["ids_match"] and mix["output"]["unscored"] == 0 and mix["output"]["rows_with_errors"] == 0
    assert mix["summary"]["rows"] == mix["rows"] and mix["summary"]["rows_with_errors"] == 0
    assert mix["killed"]["member"] == "cpu-1" and mix["per_member"]["cpu-1"]["alive_fraction"] < 1
    for key in ("pool_rows_per_s", "sum_standalone_rows_per_s", "ratio", "idle_while_queued_s",
                "free_slots_while_queued_pct", "window_s", "loadavg"):
        assert mix[key] is not None, key
    assert all(m["rows_per_s"] > 0 for m in report["standalone"]["members"].values())
    written = json.loads((tmp_path / "fleet.json").read_text())
    assert written["mixes"].keys() == report["mixes"].keys()
    assert "| mix |" in (tmp_path / "fleet.md").read_text()
