"""What a measured rate costs: the time and price of a whole evaluation on each priced machine
(`bench.machines`), for `judgefleet bench` and `judgefleet study`."""

from __future__ import annotations

from typing import List, Optional, Sequence


def projected_costs(name: str, samples_per_s: Optional[float], machines: Sequence, judgments: int) -> List[dict]:
    """One row per machine: hours for `judgments` samples at `samples_per_s`, and their price."""
    out = []
    for machine in machines:
        hours = judgments / samples_per_s / 3600 if samples_per_s else None
        cost = hours * machine.usd_per_hour if hours is not None else None
        out.append({
            "name": name, "machine": machine.name, "usd_per_hour": machine.usd_per_hour,
            "hours": round(hours, 3) if hours is not None else None,
            "usd": round(cost, 4) if cost is not None else None,
            "usd_per_1000_judgments": round(cost / judgments * 1000, 4) if cost is not None and judgments else None,
        })
    return out
