"""A study's results as files and a terminal table: study.json holds every number, study.md the
article's two tables (quality, speed and cost), report.html the same with a forest plot of the
correlations, the scatter of each judge against the reference, and its score distribution."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from jobs.agreement.report import clean, interval, md_row, print_tables
from jobs.data.report_page import (bars, counts_of, figures, intervals, num, page, pairs_table, pct, raw, scatter,
                                   section, table, text_list)
from jobs.data.shards import write_json
from jobs.errors import OutputError

BUNDLED_NOTE = (
    "The ladder was made from the bundled judge, which exists only in Q4_K_M: its F16 holds Q4_K_M's values, so "
    "the rungs re-quantize those. Rungs above Q4_K_M cannot be better than Q4_K_M itself; Q2_K and Q3_K_M measure "
    "loss relative to Q4_K_M, not to the real 16-bit Gemma."
)
VLLM_NOTE = "vLLM serves the bundled judge's values converted to bf16: the same Q4_K_M values, rounded once more."


def write(out_dir: Path, result: dict) -> List[Path]:
    cleaned = clean(result)
    files = [out_dir / "study.json", out_dir / "study.md", out_dir / "report.html"]
    try:
        write_json(files[0], cleaned)
        files[1].write_text(markdown(cleaned))
        files[2].write_text(render(cleaned), encoding="utf-8")
    except OSError as e:
        raise OutputError(f"output.dir: cannot write to '{out_dir}' ({e.strerror}); choose a writable directory") from None
    return files


# -- the tables ---------------------------------------------------------------------------------
def _mb(value: Optional[float]) -> str:
    return "-" if value is None else f"{value / 1e6:.0f} MB"


def quality_table(r: dict) -> Tuple[List[str], List[List[str]]]:
    ref = r.get("reference")
    header = ["judge", "mean score", f"Pearson with {r['original']} run 2"]
    if ref:
        header += [f"Pearson with {ref}", f"difference from {r['original']}"]
    header += ["run to run", "n"]
    rows = []
    for q in r["quality"]:
        name = q["judge"] + (" (original)" if q["is_original"] else "")
        row = [name, num(q["mean_score"], 2), interval(q["pearson_original"])]
        if ref:
            row += [interval(q["pearson_reference"]), interval(q["difference_from_original"])]
        row += [interval(q["run_to_run"]), str(q["pearson_original"].get("n") or q["run_to_run"].get("n") or "-")]
        rows.append(row)
    return header, rows


def speed_table(r: dict) -> Tuple[List[str], List[List[str]]]:
    header = ["judge", "engine", "bits/weight", "file", "peak memory", "parse rate", "samples/s",
              "generated tokens/s", "samples/s, all at once"]
    rows = [[s["judge"], s["engine"], num(s["bits_per_weight"], 2), _mb(s["file_bytes"]), _mb(s["peak_memory_bytes"]),
             pct(s["parse_rate"]), num(s["samples_per_s"]), num(s["completion_tokens_per_s"], 1),
             num(s["together_samples_per_s"])] for s in r["speed"]]
    return header, rows


def cost_table(r: dict) -> Tuple[List[str], List[List[str]]]:
    header = ["judge", "machine", "$/hour", "hours", "$ per evaluation", "$ per 1,000 judgments"]
    rows = [[c["name"], c["machine"], num(c["usd_per_hour"], 2), num(c["hours"], 2), num(c["usd"], 3),
             num(c["usd_per_1000_judgments"], 4)] for c in r["costs"]]
    return header, rows


def card_table(r: dict) -> Tuple[List[str], List[List[str]]]:
    """One judge card per judge on this hardware: quality, parse rate, speed and the price of 1,000
    judgments on the first priced machine, side by side."""
    quality = {q["judge"]: q for q in r["quality"]}
    machine = r["costs"][0]["machine"] if r["costs"] else None
    price = {c["name"]: c["usd_per_1000_judgments"] for c in r["costs"] if c["machine"] == machine}
    ref = r.get("reference")
    header = ["judge", "engine", f"Pearson with {ref}" if ref else f"Pearson with {r['original']} run 2",
              "parse rate", "samples/s", f"$ per 1,000 judgments ({machine or 'no price'})"]
    rows = [[s["judge"], s["engine"],
             interval(quality[s["judge"]]["pearson_reference" if ref else "pearson_original"]),
             pct(s["parse_rate"]), num(s["samples_per_s"]), num(price.get(s["judge"]), 4)] for s in r["speed"]]
    return header, rows


def tables(r: dict) -> Sequence[Tuple[str, List[str], List[List[str]]]]:
    ev = r["evaluation"]
    speed_how = ("alone" if all(s["measured"] == "alone" for s in r["speed"]) else "with every judge at once")
    return (
        ("Judge cards", *card_table(r)),
        ("Quality", *quality_table(r)),
        (f"Speed (samples/s and tokens/s measured {speed_how})", *speed_table(r)),
        (f"Cost of the whole evaluation ({ev['rows']} rows x {r['num_samples']} samples)", *cost_table(r)),
    )


def how(r: dict) -> str:
    group = f", resampling whole groups of {r['group']} ({r['clusters']} groups)" if r.get("group") else ""
    return (f"{r['rows']} rows, {r['repeats']} runs of each judge, {r['num_samples']} samples a row. Each judge's run 1 "
            f"is correlated with run 2 of the original ({r['original']}) and with the reference; 95% intervals from "
            f"{r['resamples']} bootstrap resamples{group} (BCa; * marks a percentile interval). 'difference' is the "
            "judge's Pearson with the reference minus the original's, on the same rows and resamples: an interval "
            "across 0 means the data cannot tell them apart. Speed is measured with each judge alone on the route "
            "(the first rows, before the study; like `score`'s own rates it includes the few seconds its run takes "
            "to start), cost projects it to the whole evaluation. Peak memory is the judge replica's whole process "
            "tree (Ray worker, engine, weights), as it reports itself in GET /pools.")


def markdown(r: dict) -> str:
    lines = ["# judgefleet study", "", how(r), ""]
    for title, header, rows in tables(r):
        lines += [f"## {title}", "", md_row(header), md_row(["---"] * len(header)), *map(md_row, rows), ""]
    for note in _notes(r):
        lines.append(f"- {note}")
    return "\n".join(lines) + "\n"



def _notes(r: dict) -> List[str]:
    bundled_vllm = any(j["engine"] == "vllm" and str(j.get("model", "")).startswith("bundled:") for j in r.get("judges", []))
    return (([BUNDLED_NOTE] if r.get("from_bundled") else []) + ([VLLM_NOTE] if bundled_vllm else [])
            + list(r.get("notes") or []))


def show(r: dict, files: Sequence[Path], console) -> None:
    print_tables(tables(r), console)
    for note in _notes(r):
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print("written: " + ", ".join(str(f) for f in files), soft_wrap=True)


# -- report.html --------------------------------------------------------------------------------
def render(r: dict) -> str:
    facts = [("dataset", r.get("dataset")), ("rows", r["rows"]), ("runs per judge", r["repeats"]),
             ("samples per row", r["num_samples"]), ("original", r["original"]),
             ("reference", r.get("reference") or "-"), ("time", f"{r.get('wall_s', 0):.0f} s")]
    sections = [section("Headline", pairs_table(facts), how(r))]
    for title, header, rows in tables(r):
        sections.append(section(title, table(header, rows, numeric=range(1, len(header)))))
    forest = [("Pearson with " + r["original"] + " run 2", "pearson_original")]
    if r.get("reference"):
        forest.append(("Pearson with " + r["reference"], "pearson_reference"))
    plots = [intervals([(q["judge"], q[key]["estimate"], q[key]["low"], q[key]["high"]) for q in r["quality"]],
                       "Pearson (95% interval)", title) for title, key in forest]
    sections.append(section("Correlations with their intervals", figures(*plots)))
    sections.append(_scatters(r))
    if r.get("notes") or r.get("from_bundled"):
        sections.append(section("Notes", text_list(_notes(r))))
    return page("judgefleet study", f"{len(r['quality'])} judges, {r['rows']} rows", sections)


def _scatters(r: dict) -> raw:
    scores = r.get("scores") or {}
    ref = r.get("reference_scores")
    parts, panels = [], {}
    for name, values in scores.items():
        panels[name] = counts_of(_counts(values))
        if ref:
            points = _points(ref, values)
            parts.append(scatter(points, r["reference"], name, f"{name} vs {r['reference']}"))
    imgs = [bars(panels, "score distributions (run 1, row means)")] + parts
    return section("Scores", "Each judge's row scores in its first run" + (" against the reference" if ref else "")
                   + ": one dot per row, jittered by up to 0.15.", figures(*imgs))


def _counts(values: Sequence[Optional[float]]) -> dict:
    out: dict = {}
    for v in values:
        if v is not None:
            out[round(v, 2)] = out.get(round(v, 2), 0) + 1
    return out


def _points(xs: Sequence[Optional[float]], ys: Sequence[Optional[float]]) -> List[List[float]]:
    out: dict = {}
    for x, y in zip(xs, ys):
        if x is not None and y is not None:
            out[(x, y)] = out.get((x, y), 0) + 1
    return [[x, y, n] for (x, y), n in out.items()]

