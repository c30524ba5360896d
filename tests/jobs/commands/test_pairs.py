"""`judgefleet pairs`: whole Prometheus prompts -> A/B rows for relative grading in both orders.

Output rows equal input rows, the chosen response sits at A in about half of them (`label`), rows
that cannot be split keep their place with `error`; end to end, a judge that always picks the
chosen response is right and consistent on every pair `score` and `agree` see."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.commands.pairs import COLUMNS, label_for
from jobs.data.prometheus_sections import parse_absolute_prompt
from jobs.judge.prompts import render_absolute
from tests.conftest import HHH, QUICKSTART

needs_hhh = pytest.mark.skipif(not HHH.is_file(), reason="needs ../shared/data/prometheus/hhh_alignment_eval.json")
HHH_ARGS = ["--chosen", "chosen_instruction", "--rejected", "rejected_instruction"]
RUBRIC = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def pair_record(i: int, **extra) -> dict:
    question = f"What is {i} + {i}?"
    return {"id": f"q{i}", "chosen": render_absolute(question, str(2 * i), RUBRIC, str(2 * i)),
            "rejected": render_absolute(question, str(2 * i + 1), RUBRIC, str(2 * i)), **extra}


@needs_hhh
def test_hhh_splits_into_one_pair_per_row_with_balanced_labels(tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(HHH), *HHH_ARGS, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "221 rows -> 221 pairs" in printed and "0 errors" in printed and str(out) in printed
    rows, source = read_jsonl(out), json.loads(HHH.read_text())
    assert len(rows) == len(source) == 221
    labels = [r["label"] for r in rows]
    assert 0.4 <= labels.count("A") / len(labels) <= 0.6  # a seeded hash: about half each way
    for i, (row, src) in enumerate(zip(rows, source)):
        chosen, rejected = (parse_absolute_prompt(src[k]) for k in ("chosen_instruction", "rejected_instruction"))
        good, bad = (row["response_a"], row["response_b"]) if row["label"] == "A" else (row["response_b"], row["response_a"])
        assert (good, bad) == (chosen["response"], rejected["response"])
        assert row["index"] == i and row["source"] == src["source"] and row["error"] is None
        assert row["instruction"] == chosen["instruction"] and row["rubric"] == chosen["rubric"]
        assert row["reference_answer"] is None
        assert "chosen_instruction" not in row and "rejected_instruction" not in row
        assert set(row) == set(COLUMNS) | {"source"}


def test_labels_are_a_seeded_hash_of_the_row(tmp_path):
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(pair_record(i)) + "\n" for i in range(200)))
    runs = {}
    for seed in (0, 0, 7):
        out = tmp_path / f"out-{seed}.jsonl"
        assert main(["pairs", str(src), "--chosen", "chosen", "--rejected", "rejected", "--out", str(out),
                     "--seed", str(seed)]) == 0
        runs.setdefault(seed, []).append([r["label"] for r in read_jsonl(out)])
    assert runs[0][0] == runs[0][1]  # the same command writes the same file
    assert runs[0][0] != runs[7][0]
    assert 70 <= runs[0][0].count("A") <= 130 and 70 <= runs[7][0].count("A") <= 130
    # Reordering the rows does not move a row's label: it hashes the row, not its position.
    assert label_for(pair_record(3), 0) == runs[0][0][3]
    row = read_jsonl(tmp_path / "out-0.jsonl")[3]
    assert row["reference_answer"] == "6" and {row["response_a"], row["response_b"]} == {"6", "7"}
    assert row[{"A": "response_a", "B": "response_b"}[row["label"]]] == "6"


def test_rows_that_cannot_be_split_keep_their_place_with_an_error(tmp_path, capsys):
    other = render_absolute("A different question?", "5", RUBRIC, "4")
    records = [
        pair_record(0),
        {**pair_record(1), "rejected": "not a Prometheus prompt"},
        {**pair_record(2), "chosen": None},
        {**pair_record(3), "rejected": other},  # another instruction
        pair_record(4, label="mine", index=99),  # input columns named like output ones
    ]
    src = tmp_path / "src.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in records[:3]) + "{broken json\n"
                   + "".join(json.dumps(r) + "\n" for r in records[3:]))
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(src), "--chosen", "chosen", "--rejected", "rejected", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "6 rows -> 2 pairs" in printed and "4 errors" in printed
    assert "First: row 1: rejected: not a Prometheus absolute prompt: no ###The instruction to evaluate:" in printed
    rows = read_jsonl(out)
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["error"] is None for r in rows] == [True, False, False, False, False, True]
    assert rows[2]["error"] == "chosen is missing"
    assert "not valid JSON" in rows[3]["error"]
    assert rows[4]["error"].startswith("chosen and rejected do not share their instruction")
    for r in rows[1:5]:
        assert r["label"] is None and r["response_a"] is None and r["rubric"] is None
    assert [r.get("id") for r in rows] == ["q0", "q1", "q2", None, "q3", "q4"]  # input columns kept, error rows too
    assert rows[5]["input_label"] == "mine" and rows[5]["input_index"] == 99 and rows[5]["index"] == 5


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_other_formats_are_read_like_score_reads_them(tmp_path, fmt):
    records = [pair_record(i) for i in range(4)]
    src = tmp_path / f"src.{fmt}"
    if fmt == "json":
        src.write_text(json.dumps(records))
    elif fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(records), src)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(pa.Table.from_pylist(records), src)
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(src), "--chosen", "chosen", "--rejected", "rejected", "--out", str(out)]) == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q3"] and all(r["error"] is None for r in rows)


def test_no_pair_at_all_exits_1_and_a_wrong_column_exits_2(tmp_path, capsys):
    src = tmp_path / "src.jsonl"
    src.write_text(json.dumps({"chosen": "x", "rejected": "y"}) + "\n")
    out = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(src), "--chosen", "chosen", "--rejected", "rejected", "--out", str(out)]) == 1
    assert "no row of" in capsys.readouterr().err and len(read_jsonl(out)) == 1
    assert main(["pairs", str(src), "--chosen", "good", "--rejected", "rejected", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--chosen good: SOURCE has no column 'good'; its columns are chosen, rejected" in err
    assert main(["pairs", str(tmp_path / "absent.json"), "--chosen", "a", "--rejected", "b", "--out", str(out)]) == 2
    assert "is not a file" in capsys.readouterr().err
    assert not (tmp_path / "pairs.jsonl.tmp").exists()


# -- end to end: pairs -> score (relative, both orders) -> agree --label -----------------------
@pytest.mark.integration
@needs_hhh
def test_hhh_pairs_scored_in_both_orders_and_measured_by_agree(ray_session, stub, tmp_path, capsys):
    """The README's three commands, with a stand-in judge that names the chosen response wherever
    it is shown: every pair right and consistent, so the labels and the swap line up."""
    from jobs.commands.score import run
    from jobs.config import load_config
    from tests.jobs.commands.test_score_e2e import read_scores

    pairs = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(HHH), *HHH_ARGS, "--out", str(pairs)]) == 0
    rows = read_jsonl(pairs)[:8]
    chosen = {frozenset((r["response_a"], r["response_b"])): r["response_" + r["label"].lower()] for r in rows}
    assert {r["label"] for r in rows} == {"A", "B"}

    def pick_chosen(prompt: str) -> str:
        a = prompt.split("###Response A:\n", 1)[1].split("\n\n###Response B:\n", 1)[0]
        b = prompt.split("###Response B:\n", 1)[1].split("\n\n###Score Rubric:", 1)[0]
        return "A" if chosen[frozenset((a, b))] == a else "B"

    stub.behaviour.score_for = pick_chosen
    out = tmp_path / "rel"
    cfg = load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", "judge.mode=relative",
                                   f"dataset.path={pairs}", "dataset.limit=8", "sampling.num_samples=1",
                                   f"output.dir={out}", "tracking.mode=disabled"])
    summary = run(cfg)
    assert summary["rows"] == 8 and summary["scored"] == 8 and summary["position_consistency"] == 1.0
    got = sorted(read_scores(out), key=lambda r: r["row_index"])
    assert [r["score"] for r in got] == [r["label"] for r in rows] and all(r["consistent"] for r in got)
    report = tmp_path / "agreement"
    assert main(["agree", str(out), "--label", "label", "--out", str(report), "--resamples", "100",
                 "--tracking", "disabled"]) == 0, capsys.readouterr().err
    (judge,) = json.loads((report / "agreement.json").read_text())["pairwise"]["judges"]
    stats = {k: v["estimate"] for k, v in judge["statistics"].items()}
    assert stats["accuracy"] == 1.0 and stats["position_consistency"] == 1.0 and stats["tie_rate"] == 0.0
    assert judge["labelled"] == 8


@pytest.mark.integration
@needs_hhh
def test_hhh_pairs_through_the_bundled_judge(judge_route, tmp_path, capsys):
    """The same three steps on the real route with the bundled judge (2 pairs, short answers): its
    verdicts are noise, but every pair is judged in both orders and measured with its card."""
    from jobs.commands.score import run
    from jobs.config import load_config

    url, _ = judge_route
    pairs = tmp_path / "pairs.jsonl"
    assert main(["pairs", str(HHH), *HHH_ARGS, "--out", str(pairs)]) == 0
    out = tmp_path / "rel"
    cfg = load_config(QUICKSTART, [f"judge.url={url}", "judge.mode=relative", f"dataset.path={pairs}",
                                   "dataset.limit=2", "sampling.num_samples=1", "sampling.max_tokens=16",
                                   f"output.dir={out}", "output.group_by=[source]", "tracking.mode=disabled"])
    summary = run(cfg)
    assert summary["rows"] == 2 and summary["parse_rate"] == 1.0 and summary["position_consistency"] is not None
    report = tmp_path / "agreement"
    assert main(["agree", str(out), "--label", "label", "--out", str(report), "--resamples", "100",
                 "--tracking", "disabled"]) == 0, capsys.readouterr().err
    got = json.loads((report / "agreement.json").read_text())
    (judge,) = got["pairwise"]["judges"]
    assert judge["n"] == judge["labelled"] == 2 and judge["swapped"]
    (card,) = got["pairwise_cards"]
    assert card["mode"] == "relative, both orders" and card["backends"] == ["llama.cpp"] and card["parse_rate"] == 1.0
