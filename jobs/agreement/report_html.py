"""report.html of `judgefleet agree`: the headline, the judge cards (of scores and of pairwise
verdicts), the tables of agreement.md, each source's score distribution, and a jittered scatter and
a confusion heat map per judge and reference. Drawn from the report dict alone (what
agreement.json holds), every value escaped."""

from __future__ import annotations

from typing import List

from jobs.agreement.report import how, interval, pairwise_card_table, tables
from jobs.data.report_page import (bars, esc, figures, heatmap, join, num, page, pairs_table, pct, raw, scatter,
                                   section, table, text_list)


def render(report: dict) -> str:
    """The whole page; `report` as agreement.json holds it (NaN already None)."""
    sections = [_headline(report)]
    if report.get("judge_cards") or report.get("pairwise_cards"):
        sections.append(_cards(report.get("judge_cards") or [], report.get("pairwise_cards") or []))
    for title, header, rows in tables(report):
        sections.append(section(title, table(header, rows, numeric=_numeric(header))))
    figs = report.get("figures") or {}
    if figs.get("distributions"):
        panels = {name: {v: n for v, n in values} for name, values in figs["distributions"].items()}
        sections.append(section("Score distributions", "Each source's scores (a judge's row score is the mean "
                                                       "of its samples).", figures(bars(panels, "score distributions"))))
    if figs.get("scatter"):
        sections.append(_against(report, figs["scatter"]))
    sections.append(_confusions(report))
    if report.get("notes"):
        sections.append(section("Notes", text_list(report["notes"])))
    subtitle = (f"{report['rows']} rows joined on row_id from {len(report['sources'])} sources; "
                f"{report.get('wall_s', 0):.1f} s")
    return page("judgefleet agree", subtitle, sections)


def _headline(report: dict) -> raw:
    s = report["settings"]
    facts = [("rows", report["rows"])]
    if report.get("clusters") is not None:
        facts.append((f"groups of {s.get('group')}", report["clusters"]))
    facts += [("bootstrap", f"{s['resamples']} resamples, seed {s['seed']}, {round(100 * s['confidence'])}% intervals"),
              ("time", f"{report.get('wall_s', 0):.1f} s")]
    sources = table(["source", "kind", "rows", "scored", "unreadable", "from", "judge model"],
                    [[x["name"], x["kind"] + (f" (part of {x['part_of']})" if x.get("part_of") else ""), x["rows"],
                      x["scored"], x["unreadable"], x["origin"], x.get("judge_model")] for x in report["sources"]],
                    numeric=(2, 3, 4))
    return section("Headline", pairs_table(facts), how(report).replace("`", ""), sources)


def _cards(cards: List[dict], pairwise: List[dict] = ()) -> raw:
    parts = []
    if cards:
        parts.append(_score_cards(cards))
    if pairwise:
        _, header, rows = pairwise_card_table(pairwise)
        parts += [raw("<h3>Pairwise judges</h3>"),
                  "One row per judge of A/B verdicts, against the label: its accuracy with ties counted wrong "
                  "and without ties, position consistency (the share of rows whose two orders name the same "
                  "response; both orders only) and tie rate, each with its 95% interval, beside its parse rate "
                  "and speed from its score dir's summary.json.",
                  table(header, rows, numeric=(5, 11, 12, 13))]
    return section("Judge cards", *parts)


def _score_cards(cards: List[dict]) -> raw:
    header = ["judge", "model", "backend", "against", "n", "Pearson", "kappa (quadratic)", "parse rate",
              "self alpha", "run to run", "rows", "samples/s", "tokens/s", "time (scoring / all)"]
    rows = []
    for c in cards:
        rtr = interval(c["run_to_run_pearson"]) + f" (with {c['run_to_run_with']})" if c["run_to_run_pearson"] else "-"
        time = (f"{num(c['wall_time_s'], 1)} s / {num(c['total_time_s'], 1)} s"
                if c.get("wall_time_s") is not None else "-")
        rows.append([c["judge"], c["judge_model"], ", ".join(c["backends"]) or "-", c["reference"] or "-", c["n"],
                     interval(c["pearson"]), interval(c["kappa_quadratic"]), pct(c["parse_rate"]),
                     interval(c["self_alpha"]), rtr, c["rows"], num(c["samples_per_s"]), num(c["tokens_per_s"], 1), time])
    return join(raw(f"<p>{esc(_SCORE_CARDS)}</p>"), table(header, rows, numeric=(4, 10, 11, 12)))


_SCORE_CARDS = ("One row per judge: its agreement with the first reference, how often its answers parsed, how far "
                "it agrees with itself, and how fast it ran (from its score dir's summary.json). Cost per 1,000 "
                "judgments needs the machine's price (bench.machines), which a score dir does not record.")


def _against(report: dict, scatters: List[dict]) -> raw:
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    parts = []
    for s in scatters:
        a, b = s["a"], s["b"]
        p = pairs.get((a, b)) or pairs.get((b, a))
        # The reference (b) along x and the judge (a) up y, in both plots.
        imgs = [scatter([[y, x, n] for x, y, n in s["points"]], b, a, f"{a} vs {b} (n={s['n']})")]
        if p:
            c = p["confusion"]
            imgs.append(heatmap(c["matrix"], c["labels"], c["rows"], c["columns"], f"confusion (rounded), n={p['n']}"))
            stats = p["statistics"]
            caption = (f"Pearson {interval(stats['pearson'])}, kappa (quadratic) {interval(stats['kappa_quadratic'])}, "
                       f"exact {interval(stats['exact_agreement'])}")
        else:
            caption = ""
        parts.append(join(raw(f"<h3>{esc(a)} against {esc(b)}</h3><p>{esc(caption)}</p>"), figures(*imgs)))
    return section("Against each reference", "Scatter: one dot per row, jittered by up to 0.15 so equal scores do "
                                             "not hide one another; the dashed line is y = x. Heat map: the rows "
                                             "of each pair of scores, rounded half up.", *parts)


def _confusions(report: dict) -> raw:
    parts = []
    for p in report["pairs"]:
        c = p["confusion"]
        labels = [str(x) for x in c["labels"]]
        t = table([f"{c['rows']} \\ {c['columns']}", *labels],
                  [[label, *row] for label, row in zip(labels, c["matrix"])], numeric=range(1, len(labels) + 1))
        parts.append(join(raw(f"<h3>{esc(c['rows'])} (rows) by {esc(c['columns'])} (columns), {esc(p['n'])} rows</h3>"), t))
    body = join(raw("<details><summary>every pair (rounded scores)</summary>"), *parts, raw("</details>"))
    return section("Confusion matrices", body)


def _numeric(header: List[str]) -> List[int]:
    return [i for i, h in enumerate(header) if h in ("n", "left out", "rows", "samples per row")]
