"""Pairwise statistics of `agree` against hand computations: accuracy with and without ties,
position consistency, first-position preference, tie rate, P(prefers longer), exact McNemar."""

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.agreement.pairwise import compare_pairwise, is_pairwise_dir, load_pairwise
from jobs.cli import main

LABELS = ["A", "B", "A", "B", "A", "B"]
LENGTHS = [(10, 5), (5, 10), (10, 5), (5, 10), (3, 3), (4, 8)]
# Judge "swapped": each order's majority in original labels (None: no verdict); r5 never answered.
ORDERS = [("A", "A"), ("B", "B"), ("A", "B"), ("A", "A"), ("A", "B"), (None, None)]
# Judge "plain": relative mode, one order.
PLAIN = ["A", "A", "A", "B", "A", "B"]


def write_pair_dir(out: Path, verdicts, orders=None, mode="relative", label=True) -> Path:
    rows = []
    for i, (score, (la, lb)) in enumerate(zip(verdicts, LENGTHS)):
        row = {"row_id": f"r{i}", "response_a": "x" * la, "response_b": "y" * lb, "judge_model": "m"}
        if label:
            row["better"] = LABELS[i]
        if orders:
            ab, ba = orders[i]
            row.update(scores=[ab], scores_swapped=[ba], score_ab=ab, score_ba=ba,
                       score=ab if ab is not None and ab == ba else None,
                       consistent=None if ab is None or ba is None else ab == ba)
        elif mode == "pairwise_absolute":  # chosen 4; rejected lower (A), higher (B) or the same (a tie)
            row.update(scores=[4], scores_b=[{"A": 2, "B": 5, None: 4}[score]], score=score)
        else:
            row.update(scores=[score], score=score)
        rows.append(row)
    (out / "scores").mkdir(parents=True)
    shard = out / "scores" / "part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), shard)
    shard.with_name("part-00000.manifest.json").write_text(json.dumps({"row_ids": [r["row_id"] for r in rows]}))
    (out / "job.json").write_text(json.dumps({"fingerprint": {"judge.mode": mode, "dataset.id_field": None}}))
    (out / "summary.json").write_text(json.dumps({"rows": len(rows), "mode": mode}))
    return out


@pytest.fixture
def dirs(tmp_path):
    return (write_pair_dir(tmp_path / "swapped", [None] * 6, ORDERS),
            write_pair_dir(tmp_path / "plain", PLAIN))


def stat(judge, name):
    return judge["statistics"][name]["estimate"]


def test_statistics_match_hand_computations(dirs):
    swapped, plain = dirs
    assert is_pairwise_dir(swapped) and is_pairwise_dir(plain)
    sources = load_pairwise([str(swapped), str(plain)], "better", None, None)
    report = compare_pairwise(sources, "better", None, 200, 0)
    s, p = report["judges"]
    assert s["n"] == 5 and s["rows_missing"] == 1  # r5: no scored sample, left out and counted
    assert stat(s, "accuracy") == pytest.approx(2 / 5)  # r0, r1 right; r2 and r4 ties count wrong; r3 wrong
    assert stat(s, "accuracy_without_ties") == pytest.approx(2 / 3)
    assert stat(s, "position_consistency") == pytest.approx(3 / 5)
    # Orders naming the response shown first (A in AB, B in BA): 1 + 1 + 2 + 1 + 2 of 10.
    assert stat(s, "first_position_preference") == pytest.approx(7 / 10)
    assert stat(s, "tie_rate") == pytest.approx(2 / 5)
    assert stat(s, "prefers_longer") == pytest.approx(2 / 3)  # r0, r1 yes, r3 no; r4 equal lengths
    assert s["statistics"]["accuracy"]["low"] <= 0.4 <= s["statistics"]["accuracy"]["high"]
    assert p["n"] == 6 and stat(p, "accuracy") == pytest.approx(5 / 6)  # wrong on r1 only
    assert stat(p, "first_position_preference") == pytest.approx(4 / 6)
    assert p["statistics"]["position_consistency"]["estimate"] is None  # one order: nothing to compare
    (m,) = report["mcnemar"]
    # On r0-r4: only "swapped" right on r1; only "plain" right on r2, r3, r4.
    assert (m["n"], m["only_a_right"], m["only_b_right"]) == (5, 1, 3)
    assert m["p_value"] == pytest.approx(10 / 16)  # P(X <= 1) + P(X >= 3), X ~ Bin(4, 1/2)
    assert m["accuracy_a"] == pytest.approx(0.4) and m["accuracy_b"] == pytest.approx(0.8)
    assert m["verdict"].startswith("the data cannot tell")


def test_pairwise_absolute_without_a_label_counts_the_chosen_one_right(tmp_path):
    d = write_pair_dir(tmp_path / "pa", ["A", "A", None, "B", "A", "A"], mode="pairwise_absolute", label=False)
    (j,) = compare_pairwise(load_pairwise([str(d)], None, None, None), None, None, 200, 0)["judges"]
    assert stat(j, "accuracy") == pytest.approx(4 / 6) and stat(j, "accuracy_without_ties") == pytest.approx(4 / 5)
    assert stat(j, "tie_rate") == pytest.approx(1 / 6)
    assert j["statistics"]["first_position_preference"]["estimate"] is None  # no positions: scored apart


def test_agree_cli_writes_the_pairwise_tables(dirs, tmp_path, capsys):
    swapped, plain = dirs
    out = tmp_path / "agreement"
    rc = main(["agree", str(swapped), str(plain), "--label", "better", "--out", str(out), "--resamples", "100",
               "--tracking", "disabled"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "agreement.json").read_text())
    assert [j["name"] for j in report["pairwise"]["judges"]] == ["swapped", "plain"]
    md = (out / "agreement.md").read_text()
    assert "## Pairwise verdicts against label `better`" in md and "position consistency" in md
    assert "## McNemar (exact)" in md
    html = (out / "report.html").read_text()
    assert "Pairwise verdicts against label" in html and "first position preferred" in html


def test_label_without_pairwise_dirs_is_refused(tmp_path, capsys):
    from tests.jobs.agreement.scoredirs import records, write_score_dir

    recs = records()
    a = write_score_dir(tmp_path / "a", recs, [[3]] * len(recs))
    b = write_score_dir(tmp_path / "b", recs, [[4]] * len(recs))
    rc = main(["agree", str(a), str(b), "--label", "better", "--out", str(tmp_path / "o"), "--tracking", "disabled"])
    assert rc == 2 and "--label better: no SOURCE is a score dir of A/B verdicts" in capsys.readouterr().err


# -- judge cards -------------------------------------------------------------------------------
SPEED = {"parse_rate": 0.95, "samples_per_s": 1.25, "tokens_per_s": 310.5, "wall_time_s": 40.0, "total_time_s": 75.0,
         "judge_backends": {"llama.cpp": 12}}


def test_pairwise_judges_get_judge_cards_in_every_output(dirs, tmp_path, capsys):
    swapped, plain = dirs
    (swapped / "summary.json").write_text(json.dumps({"rows": 6, "mode": "relative", **SPEED}))
    out = tmp_path / "agreement"
    rc = main(["agree", str(swapped), str(plain), "--label", "better", "--out", str(out), "--resamples", "100",
               "--tracking", "disabled"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    report = json.loads((out / "agreement.json").read_text())
    judges = {j["name"]: j for j in report["pairwise"]["judges"]}
    cards = {c["judge"]: c for c in report["pairwise_cards"]}
    assert list(cards) == ["swapped", "plain"]
    s, p = cards["swapped"], cards["plain"]
    for name in ("accuracy", "accuracy_without_ties", "position_consistency", "tie_rate"):
        assert s[name] == judges["swapped"]["statistics"][name]  # the estimate with its interval
    assert s["accuracy"]["estimate"] == pytest.approx(2 / 5) and s["accuracy"]["low"] is not None
    assert s["accuracy_without_ties"]["estimate"] == pytest.approx(2 / 3)
    assert s["position_consistency"]["estimate"] == pytest.approx(3 / 5) and s["tie_rate"]["estimate"] == pytest.approx(2 / 5)
    assert (s["n"], s["labelled"], s["rows_missing"], s["label"]) == (5, 5, 1, "better")
    assert s["mode"] == "relative, both orders" and s["backends"] == ["llama.cpp"] and s["judge_model"] == "m"
    assert {k: s[k] for k in ("rows", "parse_rate", "samples_per_s", "tokens_per_s", "wall_time_s", "total_time_s")} \
        == {"rows": 6, **{k: v for k, v in SPEED.items() if k != "judge_backends"}}
    assert s["summary_json"] == str(swapped / "summary.json")
    # One order: no position consistency; a summary.json without speed: none shown, nothing invented.
    assert p["mode"] == "relative" and p["position_consistency"]["estimate"] is None
    assert p["accuracy"]["estimate"] == pytest.approx(5 / 6) and p["samples_per_s"] is None and p["backends"] == []
    md = (out / "agreement.md").read_text()
    assert "## Pairwise judge cards" in md
    row = next(line for line in md.splitlines() if line.startswith("| swapped | m | llama.cpp | relative, both orders"))
    assert "| 0.60 [" in row and "| 95.0% |" in row and "| 1.250 | 310.5 | 40.0 s / 75.0 s |" in row
    assert "Pairwise judge cards" in printed.out
    html = (out / "report.html").read_text()
    assert "<h2>Judge cards</h2>" in html and "<h3>Pairwise judges</h3>" in html and "40.0 s / 75.0 s" in html


def test_score_and_pairwise_cards_side_by_side_keep_the_score_card_fields(dirs, tmp_path, capsys):
    from tests.jobs.agreement.scoredirs import records, write_score_dir

    swapped, _ = dirs
    recs = records()
    a = write_score_dir(tmp_path / "a", recs, [[1 + i % 5] for i in range(len(recs))])
    b = write_score_dir(tmp_path / "b", recs, [[1 + (i * 3) % 5] for i in range(len(recs))])
    out = tmp_path / "agreement"
    rc = main(["agree", str(a), str(b), str(swapped), "--label", "better", "--out", str(out), "--resamples", "100",
               "--tracking", "disabled"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads((out / "agreement.json").read_text())
    assert [c["judge"] for c in report["judge_cards"]] == ["a", "b"]
    assert set(report["judge_cards"][0]) == {
        "judge", "judge_model", "backends", "reference", "n", "pearson", "kappa_quadratic", "self_alpha",
        "run_to_run_pearson", "run_to_run_with", "summary_json", "rows", "parse_rate", "samples_per_s",
        "tokens_per_s", "wall_time_s", "total_time_s"}
    assert [c["judge"] for c in report["pairwise_cards"]] == ["swapped"]
    html = (out / "report.html").read_text()
    assert html.count("<h2>Judge cards</h2>") == 1 and "<h3>Pairwise judges</h3>" in html
