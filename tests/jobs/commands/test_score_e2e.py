"""`judgefleet score` end to end: real Ray Data, real judges, real Parquet; output rows = input rows."""

import json
import re
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from jobs.config import load_config
from jobs.commands.score import run
from tests.conftest import HHH, QUICKSTART, REPO, VICUNA, free_port

pytestmark = pytest.mark.integration

RESULT_COLUMNS = {
    "row_id", "row_index", "scores", "score", "score_expected", "score_probs", "feedbacks", "errors", "judge_model",
    "judge_backend", "judge_replica", "judge_node", "judge_model_file", "judge_model_sha256", "prompt_tokens", "completion_tokens",
    "latency_s",
}


def read_scores(out_dir):
    files = sorted((out_dir / "scores").glob("part-*.parquet"))
    assert files, "no shards written"
    return [row for f in files for row in pq.read_table(f).to_pylist()]


def test_quickstart_command_deploys_the_bundled_judge_and_scores(tmp_path, bundled_model):
    """The README's first command, shortened: its own Ray, its own route, the bundled model."""
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "score", "conf/quickstart.yaml", "dataset.limit=3", "sampling.num_samples=2",
         "sampling.max_tokens=24", f"serve.port={free_port()}", f"output.dir={out}", "ray.num_cpus=6"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "judgefleet score" in result.stderr and "samples scored" in result.stderr
    rows = read_scores(out)
    assert len(rows) == 3
    source = [json.loads(line) for line in (REPO / "conf/data/quickstart.jsonl").read_text().splitlines()[:3]]
    assert [r["id"] for r in rows] == [s["id"] for s in source]
    for row, src in zip(rows, source):
        assert RESULT_COLUMNS <= set(row)
        assert all(row[k] == src[k] for k in src)  # every input column kept
        assert len(row["scores"]) == 2 and all(s in (1, 2, 3, 4, 5) for s in row["scores"])
        assert row["score"] == pytest.approx(sum(row["scores"]) / 2)
        assert 1 <= row["score_expected"] <= 5 and all(abs(sum(p) - 1) < 1e-6 for p in row["score_probs"])
        assert row["errors"] is None and row["judge_backend"] == "llama.cpp"
        assert row["judge_model_sha256"] == bundled_model.sha256
        assert re.fullmatch(r"[0-9a-f]{56}", row["judge_node"])  # the Ray node id of the replica
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0 and row["latency_s"] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows"] == 3 and summary["scored"] == 3 and summary["parse_rate"] == 1.0
    assert set(summary["by_group"]) == {"quality", "topic"}
    assert summary["rows_per_s"] > 0 and summary["tokens_per_s"] > 0
    assert (out / "scores" / "part-00000.manifest.json").exists()


def test_vicuna_prompt_field_through_the_route(judge_route, tmp_path):
    if not VICUNA.exists():
        pytest.skip("../shared/data/prometheus is not here")
    url, _ = judge_route
    cfg = load_config(QUICKSTART, [
        f"judge.url={url}", f"dataset.path={VICUNA}", "dataset.prompt_field=instruction", "dataset.limit=2",
        "sampling.num_samples=2", "sampling.max_tokens=16", f"output.dir={tmp_path}", "output.group_by=[category]",
    ])
    summary = run(cfg)
    rows = read_scores(tmp_path)
    source = json.loads(VICUNA.read_text())[:2]
    assert [(r["idx"], r["response_source"]) for r in rows] == [(s["idx"], s["response_source"]) for s in source]
    assert all(len(r["scores"]) == 2 and None not in r["scores"] for r in rows)
    assert all(r["gpt4_score"] and r["instruction"].startswith("###Task Description:") for r in rows)
    assert summary["samples_scored"] == 4 and summary["by_group"]["category"]["generic"]["rows"] == 2


def test_bad_rows_keep_their_place_and_say_why(judge_route, write_jsonl, tmp_path):
    url, _ = judge_route
    rubric = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}
    good = {"instruction": "Add 2 and 2.", "response": "4", "rubric": rubric}
    path = write_jsonl([
        good,
        {"instruction": "Add 2 and 3.", "rubric": rubric},                      # no response
        {"instruction": "Add 2 and 4.", "response": 6, "rubric": rubric},        # not text
        {"instruction": "Add 2 and 5.", "response": "   ", "rubric": rubric},    # empty
        "{this line is not json",
        {"instruction": "Summarise. " + "word " * 2500, "response": "ok", "rubric": rubric},  # too long
        {"instruction": "Add 2 and 6.", "response": "8"},                        # no rubric
        dict(good, instruction="Add 3 and 3.", response="6"),
    ])
    cfg = load_config(QUICKSTART, [
        f"judge.url={url}", f"dataset.path={path}", "sampling.num_samples=1", "sampling.max_tokens=8",
        f"output.dir={tmp_path / 'out'}", "output.group_by=[]",
    ])
    summary = run(cfg)
    rows = read_scores(tmp_path / "out")
    assert len(rows) == 8 and [r["row_index"] for r in rows] == list(range(8))
    errors = [(r["errors"] or [""])[0] for r in rows]
    assert rows[0]["scores"][0] in (1, 2, 3, 4, 5) and rows[0]["errors"] is None
    assert "response is missing" in errors[1]
    assert "response is int, not text" in errors[2]
    assert "response is empty" in errors[3]
    assert "line 5: not valid JSON" in errors[4]
    assert "prompt too long" in errors[5] and "2048" in errors[5]
    assert "rubric is missing" in errors[6]
    assert rows[7]["scores"][0] in (1, 2, 3, 4, 5)
    for bad in rows[1:7]:
        assert bad["scores"] == [None] and bad["score"] is None and bad["prompt_tokens"] == 0
    assert summary["rows"] == 8 and summary["scored"] == 2 and summary["unscored"] == 6


def test_external_llama_cpp_server(llama_server, ray_session, write_jsonl, tmp_path):
    """Any OpenAI URL works; llama-cpp-python's server ignores `n` and the choice constraint."""
    rubric = {"criteria": "Is it correct?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}
    path = write_jsonl([
        {"instruction": "What is 3 x 3?", "response": "9", "rubric": rubric, "reference_answer": "9"},
        {"instruction": "Capital of Italy?", "response": "Paris", "rubric": rubric, "reference_answer": "Rome"},
    ])
    cfg = load_config(QUICKSTART, [
        f"judge.url={llama_server}", "judge.model=gemma-local", f"dataset.path={path}", "sampling.num_samples=2",
        "sampling.max_tokens=16", f"output.dir={tmp_path / 'out'}", "output.group_by=[]",
    ])
    summary = run(cfg)
    rows = read_scores(tmp_path / "out")
    assert len(rows) == 2
    for row in rows:
        assert row["judge_backend"] == "openai-compatible" and row["judge_replica"] is None and row["judge_node"] is None
        assert len(row["scores"]) == 2 and all(s in (1, 2, 3, 4, 5) for s in row["scores"]), row["errors"]
        assert row["score_expected"] is not None
    assert summary["parse_rate"] == 1.0


# -- pairwise grading: both orders, and two responses graded apart -------------------------------
def quickstart_pairs():
    """A/B rows from quickstart.jsonl's strong and weak answer to each question; the strong one is
    A in even rows and B in odd ones (`better` says which)."""
    from tests.conftest import QUICKSTART_DATA

    by_question = {}
    for line in QUICKSTART_DATA.read_text().splitlines():
        r = json.loads(line)
        by_question.setdefault(r["instruction"], {})[r["quality"]] = r
    rows = []
    for i, pair in enumerate(by_question.values()):
        strong, weak = pair["strong"], pair["weak"]
        a, b = (strong, weak) if i % 2 == 0 else (weak, strong)
        rows.append({"id": f"pair-{i}", "instruction": strong["instruction"], "response_a": a["response"],
                     "response_b": b["response"], "rubric": strong["rubric"],
                     "reference_answer": strong["reference_answer"], "better": "A" if i % 2 == 0 else "B"})
    return rows, {pair["strong"]["response"] for pair in by_question.values()}


def test_relative_mode_judges_both_orders_and_agree_reports_position_consistency(ray_session, stub, write_jsonl,
                                                                                tmp_path, capsys):
    from jobs.cli import main

    rows, strong = quickstart_pairs()
    path = write_jsonl(rows)
    # A judge that picks the strong answer wherever it is shown: right and consistent in both orders.
    stub.behaviour.score_for = lambda p: "A" if p.split("###Response A:")[1].split("###Response B:")[0].strip() in strong else "B"
    out = tmp_path / "out"
    cfg = load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", "judge.mode=relative",
                                   f"dataset.path={path}", "dataset.id_field=id", "sampling.num_samples=2",
                                   f"output.dir={out}", "output.group_by=[]", "tracking.mode=disabled"])
    summary = run(cfg)
    got = sorted(read_scores(out), key=lambda r: r["row_index"])
    assert len(got) == len(rows) == 8 and summary["scored"] == 8
    for row, src in zip(got, rows):
        assert RESULT_COLUMNS | {"scores_swapped", "score_ab", "score_ba", "consistent", "feedbacks_swapped"} <= set(row)
        assert row["score"] == row["score_ab"] == row["score_ba"] == src["better"] and row["consistent"] is True
        assert row["scores"] == row["scores_swapped"] == [src["better"]] * 2 and row["errors"] is None
    feedback_prompts = [b["prompt"] for b in stub.stats.bodies if "structured_outputs" not in b]
    assert len(feedback_prompts) == 16  # both orders of every row
    report = tmp_path / "agreement"
    assert main(["agree", str(out), "--label", "better", "--out", str(report), "--resamples", "100",
                 "--tracking", "disabled"]) == 0, capsys.readouterr().err
    (judge,) = json.loads((report / "agreement.json").read_text())["pairwise"]["judges"]
    stats = {k: v["estimate"] for k, v in judge["statistics"].items()}
    assert stats["position_consistency"] == 1.0 and stats["accuracy"] == 1.0 and stats["tie_rate"] == 0.0
    assert stats["first_position_preference"] == 0.5
    assert "position consistency" in (report / "agreement.md").read_text()


@pytest.mark.skipif(not HHH.is_file(), reason="needs ../shared/data/prometheus/hhh_alignment_eval.json")
def test_pairwise_absolute_scores_hhh_alignment_prompts(ray_session, stub, write_jsonl, tmp_path):
    # One question has several answers: a response rejected in one pair is chosen in another, so
    # the stub judge (5 for a chosen prompt, else 2) gets pairs whose rejected prompt is chosen nowhere.
    everything = json.loads(HHH.read_text())
    chosen_anywhere = {r["chosen_instruction"] for r in everything}
    rows = [r for r in everything if r["rejected_instruction"] not in chosen_anywhere][:6]
    chosen = {r["chosen_instruction"] for r in rows}
    stub.behaviour.score_for = lambda p: "5" if any(p.startswith(c) for c in chosen) else "2"
    out = tmp_path / "out"
    cfg = load_config(QUICKSTART, [f"judge.url={stub.url}", "judge.model=stub-judge", "judge.mode=pairwise_absolute",
                                   f"dataset.path={write_jsonl(rows)}", "dataset.prompt_field=chosen_instruction",
                                   "dataset.rejected_prompt_field=rejected_instruction", "sampling.num_samples=1",
                                   f"output.dir={out}", "output.group_by=[]", "tracking.mode=disabled"])
    summary = run(cfg)
    got = read_scores(out)
    assert len(got) == 6 and summary["chosen_win_rate"] == 1.0
    assert all(r["score"] == "A" and r["scores"] == [5] and r["scores_b"] == [2] for r in got), got[0]["errors"]
