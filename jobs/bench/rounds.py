"""Rounds of the bench: every method run several times, in alternating order, on a noisy machine.

A shared VM's speed drifts by tens of percent within minutes. Methods run one after another, so
a drift between two of them shows up as a difference between the methods. With `bench.rounds`
> 1 the methods run in rounds, each round in the reverse order of the one before (A B C, C B A,
A B C, ...): a steady drift favours no method over the rounds. A ratio between two methods is
taken within each round (the two ran minutes apart) and the report's ratio is the median over
rounds; each method's row is a round's real measurement, its median by samples/s (the lower of
the two middle ones for an even count, so a lucky round never becomes the row).
"""

from __future__ import annotations

import statistics
from typing import Dict, List, Sequence, Tuple

# (a, b): the report gives samples/s of a over b, where both ran.
RATIO_PAIRS = (("judgefleet", "article"), ("judgefleet", "engine"), ("engine", "article"),
               ("judgefleet", "llama-server"), ("llama-server", "article"), ("judgefleet", "vllm-server"))


def schedule(methods: Sequence[str], rounds: int) -> List[Tuple[int, str]]:
    """(round, method) in the order they run: each round the reverse of the one before."""
    return [(r, m) for r in range(rounds) for m in (methods if r % 2 == 0 else list(reversed(methods)))]


def round_ratios(results: Dict[str, dict]) -> Dict[str, float]:
    """samples/s ratios of one round's methods (RATIO_PAIRS where both ran and b has a rate)."""
    return {f"{a}/{b}": round(results[a]["samples_per_s"] / results[b]["samples_per_s"], 3)
            for a, b in RATIO_PAIRS if a in results and b in results and results[b]["samples_per_s"]}


def combine(per_round: Sequence[Dict[str, dict]]) -> Tuple[Dict[str, dict], Dict[str, float], Dict[str, List[float]]]:
    """(rows, ratios, ratios by round) from each round's results.

    rows: per method its median round's result (median_low by samples/s), with `rounds` - its
    samples/s in every round it ran - added where there was more than one round.
    """
    methods = list(dict.fromkeys(m for results in per_round for m in results))
    rows: Dict[str, dict] = {}
    for m in methods:
        runs = [results[m] for results in per_round if m in results]
        rate = statistics.median_low(r["samples_per_s"] for r in runs)
        rows[m] = dict(next(r for r in runs if r["samples_per_s"] == rate))
        if len(per_round) > 1:
            rows[m]["rounds"] = [r["samples_per_s"] for r in runs]
    by_round: Dict[str, List[float]] = {}
    for results in per_round:
        for k, v in round_ratios(results).items():
            by_round.setdefault(k, []).append(v)
    ratios = {k: round(statistics.median(v), 3) for k, v in by_round.items()}
    return rows, ratios, by_round
