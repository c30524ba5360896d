"""The seed's table: the lm-buddy article's speed and cost table, for the methods `judgefleet bench`
measured here, next to the article's own rows (stated as theirs, never re-measured).

The article timed its whole evaluation - 320 vicuna prompts x 3 samples, a Prometheus judge served
by llamafile - on each machine. This table projects each method's measured rate to that same
evaluation on the machine measured, at its price per hour (the first entry of `bench.machines`),
with the memory of the method's server process tree by USS and PSS (jobs/runtime/memory.py).
"""

from __future__ import annotations

import os
import platform
from typing import Dict, List, Optional, Sequence

ARTICLE = ('mozilla.ai, "Local LLM-as-judge evaluation with lm-buddy, Prometheus and llamafile" '
           "(https://blog.mozilla.ai/local-llm-as-judge-evaluation-with-lm-buddy-prometheus-and-llamafile/)")
ARTICLE_PROMPTS = 320
ARTICLE_SAMPLES = 3
# Their rows, as they published them. Their judge was Prometheus served by llamafile, not the
# bundled judge: tokens/s compare machines and servers, not these models. Only these two rows
# are quoted (the article's other rows could not be read here).
ARTICLE_ROWS = (
    {"hardware": "1x NVIDIA A100 (GPU)", "tokens_per_s": 44.0, "hours": 1 + 20 / 60, "usd": 2.95},
    {"hardware": "32 AMD Epyc cores (CPU)", "tokens_per_s": 7.0, "hours": 8 + 5 / 60, "usd": 9.13},
)


def hardware() -> Dict[str, object]:
    """This machine: CPU model, cores (logical, and those this process may use), memory."""
    import psutil

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "logical_cores": os.cpu_count(), "usable_cores": usable,
            "physical_cores": psutil.cpu_count(logical=False),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1)}


def describe(hw: Dict[str, object]) -> str:
    cores = f"{hw['usable_cores']} cores" + (f" of {hw['logical_cores']}" if hw["usable_cores"] != hw["logical_cores"] else "")
    return f"{hw['cpu']}, {cores}, {hw['memory_gib']} GiB"


def hours_minutes(hours: Optional[float]) -> str:
    """1.3333 -> 1h20' (the article's notation)."""
    if hours is None:
        return "-"
    minutes = round(hours * 60)
    return f"{minutes // 60}h{minutes % 60:02d}'"


def seed_table(results: Dict[str, dict], machines: Sequence, hw: Dict[str, object]) -> dict:
    """Rows for the methods measured here (projected to the article's evaluation) and the article's."""
    judgments = ARTICLE_PROMPTS * ARTICLE_SAMPLES
    price = machines[0].usd_per_hour if machines else None
    price_name = machines[0].name if machines else None
    ours: List[dict] = []
    for method, r in results.items():
        rate = r.get("samples_per_s")
        hours = judgments / rate / 3600 if rate else None
        ours.append({
            "method": method, "hardware": describe(hw), "tokens_per_s": r.get("completion_tokens_per_s"),
            "samples_per_s": rate, "usd_per_hour": price, "hours": round(hours, 3) if hours is not None else None,
            "time": hours_minutes(hours),
            "usd": round(hours * price, 4) if hours is not None and price is not None else None,
            "pss_mib": r.get("peak_pss_mib"), "uss_mib": r.get("peak_uss_mib"),
        })
    theirs = [{**row, "time": hours_minutes(row["hours"]), "usd_per_hour": round(row["usd"] / row["hours"], 2)}
              for row in ARTICLE_ROWS]
    return {"evaluation": {"prompts": ARTICLE_PROMPTS, "samples": ARTICLE_SAMPLES, "judgments": judgments},
            "hardware": hw, "price": {"machine": price_name, "usd_per_hour": price},
            "ours": ours, "article": theirs, "article_source": ARTICLE}


def seed_markdown(t: dict) -> str:
    def num(v, digits=1):
        return "-" if v is None else f"{v:.{digits}f}"

    e = t["evaluation"]
    lines = [
        f"## The article's table: the whole evaluation ({e['prompts']} prompts x {e['samples']} samples)",
        "",
        f"Projected from the rates measured above on this machine ({describe(t['hardware'])}), at "
        f"${num(t['price']['usd_per_hour'], 2)}/hour ({t['price']['machine']}); memory is the peak of the "
        "method's server process tree by PSS (USS), no shared page counted twice. The article's rows are "
        "theirs, quoted: a Prometheus judge served by llamafile, timed by them; their $/hour is their cost "
        "over their time.",
        "",
        "| whose | method | hardware | tokens/s | $/hour | time | $ | memory MiB, PSS (USS) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in t["ours"]:
        memory = f"{num(r['pss_mib'], 0)} ({num(r['uss_mib'], 0)})" if r["pss_mib"] is not None else "-"
        lines.append(f"| this run | {r['method']} | {r['hardware']} | {num(r['tokens_per_s'])} | "
                     f"{num(r['usd_per_hour'], 2)} | {r['time']} | {num(r['usd'], 2)} | {memory} |")
    for r in t["article"]:
        lines.append(f"| the article's | llamafile | {r['hardware']} | {num(r['tokens_per_s'], 0)} | "
                     f"{num(r['usd_per_hour'], 2)} | {r['time']} | {num(r['usd'], 2)} | not given |")
    lines += ["", f"Source of the article's rows: {t['article_source']}. Only its A100 and 32-core Epyc rows are "
              "quoted here.", ""]
    return "\n".join(lines)
