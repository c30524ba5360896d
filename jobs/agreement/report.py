"""The analysis as files and as a terminal table: agreement.json holds every number,
agreement.md the tables a reader wants, report.html those tables with plots and judge cards
(`report_html`), and the terminal shows the same tables with rich. The pairwise judges' cards
(accuracy, position consistency, ties beside parse rate and speed) are in all three."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

from jobs.data.report_page import num, pct
from jobs.data.shards import write_json
from jobs.errors import OutputError

CORRELATION: Sequence[Tuple[str, str]] = (
    ("pearson", "Pearson"), ("spearman", "Spearman"), ("kendall_tau_b", "Kendall tau-b"), ("icc_2_1", "ICC(2,1)"),
)
AGREEMENT: Sequence[Tuple[str, str]] = (
    ("kappa_quadratic", "kappa (quadratic)"), ("krippendorff_alpha", "alpha (ordinal)"),
    ("exact_agreement", "exact"), ("within_one", "within 1"), ("mean_offset", "offset a-b"),
)
PAIRWISE: Sequence[Tuple[str, str]] = (
    ("accuracy", "accuracy (ties wrong)"), ("accuracy_without_ties", "accuracy without ties"),
    ("position_consistency", "position consistency"), ("first_position_preference", "first position preferred"),
    ("tie_rate", "tie rate"), ("prefers_longer", "P(prefers longer)"),
)
PART_WHOLE = "+"  # marks a pair where one source is the mean of runs that include the other


def write(out_dir: Path, report: dict) -> List[Path]:
    """agreement.json, agreement.md and report.html under out_dir; OutputError if they cannot be written."""
    from jobs.agreement.report_html import render  # it imports this module's tables

    cleaned = clean(report)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "agreement.json", cleaned)
        (out_dir / "agreement.md").write_text(markdown(report))
        (out_dir / "report.html").write_text(render(cleaned), encoding="utf-8")
    except OSError as e:
        raise OutputError(f"--out: cannot write to '{out_dir}' ({e.strerror}); choose a writable directory") from None
    return [out_dir / "agreement.json", out_dir / "agreement.md", out_dir / "report.html"]


def clean(value: Any) -> Any:
    """NaN and infinities -> None: JSON has no NaN, and a missing number is null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    return value


def interval(stat: Optional[dict], digits: int = 2) -> str:
    """'0.81 [0.77, 0.85]'; '*' marks a percentile interval (BCa gave none); '-' an undefined value."""
    if not stat or stat.get("estimate") is None:
        return "-"
    text = f"{stat['estimate']:.{digits}f}"
    if stat.get("low") is None:
        return text + " (no interval)"
    mark = "" if stat["method"] == "BCa" else "*"
    return f"{text} [{stat['low']:.{digits}f}, {stat['high']:.{digits}f}]{mark}"


def _pair_name(p: dict) -> Tuple[str, str]:
    return p["a"], p["b"] + (f" {PART_WHOLE}" if p.get("part_whole") else "")


def _left_out(p: dict) -> str:
    return str(p["rows_missing"])


def tables(report: dict) -> List[Tuple[str, List[str], List[List[str]]]]:
    """(title, header, rows) of each table, shared by the markdown and the terminal."""
    pairs = report["pairs"]
    out = [] if not pairs else [
        ("Correlation", ["a", "b", "n", "left out", *(t for _, t in CORRELATION)],
         [[*_pair_name(p), str(p["n"]), _left_out(p), *(interval(p["statistics"][k]) for k, _ in CORRELATION)]
          for p in pairs]),
        ("Agreement on the 1-5 scale", ["a", "b", *(t for _, t in AGREEMENT)],
         [[*_pair_name(p), *(interval(p["statistics"][k]) for k, _ in AGREEMENT)] for p in pairs]),
    ]
    if report["versus_reference"]:
        out.append(("Two judges against a reference (Pearson)",
                    ["reference", "a", "b", "n", "r(a)", "r(b)", "r(a) - r(b)", "verdict"],
                    [[v["reference"], v["a"], v["b"], str(v["n"]), interval(v["pearson_a"]), interval(v["pearson_b"]),
                      interval(v["difference"]), v["verdict"]] for v in report["versus_reference"]]))
    consistency = report["self_consistency"]
    if consistency["samples"]:
        out.append(("Self-consistency: alpha (ordinal) over each source's own samples or runs",
                    ["source", "samples per row", "rows", "alpha"],
                    [[s["source"], str(s["samples_per_row"]), str(s["n"]), interval(s["krippendorff_alpha"])]
                     for s in consistency["samples"]]))
    if consistency["run_to_run"]:
        out.append(("Run to run: Pearson between two runs of one judge",
                    ["a", "b", "judge", "n", "Pearson"],
                    [[r["a"], r["b"], r["judge"], str(r["n"]), interval(r["pearson"])] for r in consistency["run_to_run"]]))
    out.extend(pairwise_tables(report.get("pairwise")))
    return out


def pairwise_tables(pw: Optional[dict]) -> List[Tuple[str, List[str], List[List[str]]]]:
    """The tables of pairwise judges against the label, and their McNemar tests."""
    if not pw:
        return []
    against = f"label `{pw['label']}`" if pw.get("label") else "no label (pairwise_absolute: the chosen one)"
    out = [(f"Pairwise verdicts against {against}", ["judge", "n", "left out", *(t for _, t in PAIRWISE)],
            [[j["name"], str(j["n"]), str(j["rows_missing"]), *(interval(j["statistics"][k]) for k, _ in PAIRWISE)]
             for j in pw["judges"]])]
    if pw.get("mcnemar"):
        out.append(("McNemar (exact): two judges' accuracy on the same pairs, ties wrong",
                    ["a", "b", "n", "accuracy a", "accuracy b", "only a right", "only b right", "p", "a - b", "verdict"],
                    [[t["a"], t["b"], str(t["n"]), f"{t['accuracy_a']:.2f}", f"{t['accuracy_b']:.2f}",
                      str(t["only_a_right"]), str(t["only_b_right"]), f"{t['p_value']:.3g}", interval(t["difference"]),
                      t["verdict"]] for t in pw["mcnemar"]]))
    return out


PAIRWISE_CARD: Sequence[Tuple[str, str]] = (
    ("accuracy", "accuracy (ties wrong)"), ("accuracy_without_ties", "accuracy without ties"),
    ("position_consistency", "position consistency"), ("tie_rate", "tie rate"),
)


def pairwise_card_table(cards: Sequence[dict]) -> Tuple[str, List[str], List[List[str]]]:
    """(title, header, rows) of the pairwise judges' cards: the markdown, the terminal and report.html."""
    header = ["judge", "model", "backend", "mode", "against", "n", *(t for _, t in PAIRWISE_CARD), "parse rate",
              "rows", "samples/s", "tokens/s", "time (scoring / all)"]
    rows = []
    for c in cards:
        time = (f"{num(c['wall_time_s'], 1)} s / {num(c['total_time_s'], 1)} s"
                if c.get("wall_time_s") is not None else "-")
        against = c.get("label") or "chosen (A)"
        rows.append([c["judge"], c.get("judge_model") or "-", ", ".join(c["backends"]) or "-", c["mode"], against,
                     str(c["n"]), *(interval(c[k]) for k, _ in PAIRWISE_CARD), pct(c["parse_rate"]), num(c["rows"]),
                     num(c["samples_per_s"]), num(c["tokens_per_s"], 1), time])
    return "Pairwise judge cards", header, rows


def card_tables(report: dict) -> List[Tuple[str, List[str], List[List[str]]]]:
    """The judge cards shown in agreement.md and on the terminal (report.html draws its own)."""
    cards = report.get("pairwise_cards")
    return [pairwise_card_table(cards)] if cards else []


def how(report: dict) -> str:
    s = report["settings"]
    over = f"the {report['clusters']} groups of `{s['group']}` (whole groups resampled)" if s.get("group") else "rows"
    return (f"95% intervals: paired bootstrap over {over}, {s['resamples']} resamples, seed {s['seed']}; "
            "BCa unless marked * (percentile). Categories use scores rounded half up. "
            f"`{PART_WHOLE}`: one source is the mean of runs that include the other (agreement inflated).")


def markdown(report: dict) -> str:
    lines = ["# Agreement", "", how(report), "",
             "| source | kind | rows | scored | from |", "| --- | --- | --- | --- | --- |"]
    for s in report["sources"]:
        origin = s["origin"] + (f" (judge {s['judge_model']})" if s.get("judge_model") else "")
        lines.append(f"| {s['name']} | {s['kind']} | {s['rows']} | {s['scored']} | {origin} |")
    for title, header, rows in [*tables(report), *card_tables(report)]:
        lines += ["", f"## {title}", "", md_row(header), md_row(["---"] * len(header))]
        lines += [md_row(r) for r in rows]
    lines += ["", "## Confusion matrices (rounded scores)"]
    for p in report["pairs"]:
        c = p["confusion"]
        lines += ["", f"{c['rows']} (rows) by {c['columns']} (columns), {p['n']} rows:", "",
                  md_row([""] + [str(x) for x in c["labels"]]), md_row(["---"] * (len(c["labels"]) + 1))]
        lines += [md_row([str(label)] + [str(v) for v in row]) for label, row in zip(c["labels"], c["matrix"])]
    if report["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def md_row(cells: Sequence[Any]) -> str:
    """One markdown table row; a '|' inside a cell is escaped, so it cannot split the cell."""
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def print_tables(tables: Sequence[Tuple[str, List[str], List[List[str]]]], console) -> None:
    """(title, header, rows) tables on the terminal, long cells folded."""
    from rich.table import Table

    for title, header, rows in tables:
        table = Table(title=title, title_justify="left")
        for name in header:
            table.add_column(name, overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)


def show(report: dict, files: Sequence[Path], console=None) -> None:
    """The tables on the terminal."""
    from rich.console import Console

    console = console or Console()
    print_tables([*tables(report), *card_tables(report)], console)
    console.print(how(report).replace("`", ""))
    for note in report["notes"]:
        console.print(f"[yellow]note:[/] {note}", soft_wrap=True)
    console.print(f"written: {', '.join(str(f) for f in files)} ({report['wall_s']:.1f} s)", soft_wrap=True)
