"""`judgefleet agree` through the CLI: a data file with a list reference column and two small
hand-made score dirs -> agreement.json, agreement.md, report.html and exit 0, and an offline W&B
run whose `agreement` artifact names the score runs it read; errors a user can fix -> one line, exit 2."""

import base64
import hashlib
import json

import numpy as np
import pytest

from jobs.cli import main
from tests.jobs.agreement.scoredirs import gold_mean, records, write_data, write_score_dir
from tests.wandb_records import offline_run_file, read_records


@pytest.fixture
def inputs(tmp_path):
    recs = records()
    data = write_data(tmp_path / "data.jsonl", recs)
    good, noise = [], []
    for i, r in enumerate(recs):
        g = gold_mean(r) or 3
        good.append([int(min(5, max(1, round(g) + d))) for d in (0, (i % 3) - 1, 0)])
        noise.append([1 + (i * 3) % 5, 1 + (i * 11) % 5, 1 + (i * 13 + 2) % 5])
    good[0] = [None, None, None]  # never scored: left out and counted
    a = write_score_dir(tmp_path / "judge-a", recs, good, judge_model="m1")
    b = write_score_dir(tmp_path / "judge-b", recs, noise, judge_model="m1", shard_rows=7)
    return tmp_path, data, a, b, recs, good


def test_agree_writes_every_number(inputs, capsys):
    tmp, data, a, b, recs, good = inputs
    out = tmp / "agreement"
    rc = main(["agree", str(a), str(b), str(data), "--ref", "gold", "--group", "idx", "--out", str(out),
               "--resamples", "60", "--seed", "3", "--tracking", "disabled"])
    assert rc == 0, capsys.readouterr().err
    assert (out / "report.html").is_file() and not (out / "wandb").exists()
    report = json.loads((out / "agreement.json").read_text())
    assert report["settings"]["resamples"] == 60 and report["settings"]["group"] == "idx"
    assert [s["name"] for s in report["sources"]] == ["judge-a", "judge-b", "gold", "gold[1]", "gold[2]"]
    assert report["rows"] == 24 and report["clusters"] == 8
    pairs = {(p["a"], p["b"]): p for p in report["pairs"]}
    assert len(pairs) == 10
    p = pairs[("judge-a", "gold")]
    # Row 0 has no judge score; rows 5 ("n/a") and 6 (null) have no gold: 21 rows compared.
    assert (p["n"], p["rows_missing"], p["rows_missing_by_source"]) == (21, 3, {"judge-a": 1, "gold": 2})
    keep = [i for i in range(24) if i not in (0, 5, 6)]
    x = [np.mean(good[i]) for i in keep]
    y = [gold_mean(recs[i]) for i in keep]
    assert p["statistics"]["pearson"]["estimate"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    for name, s in p["statistics"].items():
        assert s["low"] <= s["estimate"] <= s["high"], (name, s)
        assert s["method"] in ("BCa", "percentile"), (name, s)
    assert p["clusters"] == 8 and p["confusion"]["labels"] == [1, 2, 3, 4, 5]
    assert pairs[("gold", "gold[1]")]["part_whole"] and not pairs[("gold[1]", "gold[2]")]["part_whole"]

    (versus,) = report["versus_reference"]
    assert (versus["reference"], versus["a"], versus["b"], versus["n"]) == ("gold", "judge-a", "judge-b", 21)
    d = versus["difference"]
    assert d["estimate"] == pytest.approx(versus["pearson_a"]["estimate"] - versus["pearson_b"]["estimate"])
    assert versus["verdict"] == "judge-a agrees more with gold" and d["low"] > 0

    consistency = report["self_consistency"]
    assert [s["source"] for s in consistency["samples"]] == ["judge-a", "judge-b", "gold"]
    assert consistency["samples"][0]["samples_per_row"] == 3 and consistency["samples"][0]["n"] == 23
    assert {(r["a"], r["b"]) for r in consistency["run_to_run"]} == {("judge-a", "judge-b"), ("gold[1]", "gold[2]")}

    md = (out / "agreement.md").read_text()
    assert "| judge-a | gold | 21 | 3 |" in md and "judge-a agrees more with gold" in md
    assert "## Confusion matrices" in md
    printed = capsys.readouterr().out
    assert "Correlation" in printed and "agreement.json" in printed

    # Deterministic with --seed.
    again = tmp / "again"
    main(["agree", str(a), str(b), str(data), "--ref", "gold", "--group", "idx", "--out", str(again),
          "--resamples", "60", "--seed", "3", "--tracking", "disabled"])
    second = json.loads((again / "agreement.json").read_text())
    assert second["pairs"] == report["pairs"] and second["versus_reference"] == report["versus_reference"]


@pytest.mark.parametrize("args, message", [
    (["{tmp}/nowhere", "{a}"], "SOURCE '{tmp}/nowhere' does not exist; give a `judgefleet score` output dir"),
    (["{tmp}/empty", "{a}"], "is a directory without scored shards"),
    (["{tmp}/notes.txt", "{a}"], "is neither a score dir nor a data file"),
    (["{a}", "{data}", "--ref", "gpt4_score"], "--ref 'gpt4_score': no SOURCE has a column 'gpt4_score'"),
    (["{a}", "{b}", "--group", "question"], "--group 'question': no SOURCE has a column 'question'"),
    (["{a}"], "agree needs at least two sources to compare, found 1 (judge-a); add another score dir"),
    (["{data}"], "found 0 (none)"),
    (["{a}", "{b}", "--resamples", "5"], "--resamples 5: too few"),
    (["{a}", "{b}", "--tracking", "online"], "--tracking online needs $WANDB_API_KEY"),
])
def test_errors_a_user_can_fix_are_one_line_and_exit_2(inputs, capsys, monkeypatch, args, message):
    tmp, data, a, b, _recs, _good = inputs
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    (tmp / "empty").mkdir()
    (tmp / "notes.txt").write_text("hello")
    fill = {"tmp": tmp, "a": a, "b": b, "data": data}
    rc = main(["agree", *(x.format(**fill) for x in args), "--out", str(tmp / "out")])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("judgefleet: error: ") and err.count("\n") == 1, err
    assert message.format(**fill) in err
    assert not (tmp / "out" / "agreement.json").exists() and not (tmp / "out" / "wandb").exists()


def test_agree_is_an_offline_wandb_run_naming_the_score_runs_it_read(inputs, capsys):
    tmp, data, a, b, _recs, _good = inputs
    out = tmp / "agreement"
    assert main(["agree", str(a), f"second={b}", str(data), "--ref", "gold", "--out", str(out),
                 "--resamples", "30"]) == 0  # offline by default
    run_file = offline_run_file(out)
    assert f"lineage: W&B offline run in {run_file.parent}" in capsys.readouterr().out.replace("\n", "")
    records = read_records(run_file)
    kinds = [r.WhichOneof("record_type") for r in records]
    (run,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.job_type == "agree" and run.project == "judgefleet"
    (artifact,) = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"]
    assert artifact.type == "agreement" and artifact.name == "agreement-agreement"
    entries = {e.path: e for e in artifact.manifest.contents}
    assert set(entries) == {"agreement.json", "agreement.md", "report.html"}
    for name, entry in entries.items():  # by reference, with each file's md5
        assert entry.ref == (out / name).resolve().as_uri()
        assert entry.digest == base64.b64encode(hashlib.md5((out / name).read_bytes()).digest()).decode()
    meta = json.loads(artifact.metadata)
    assert meta["rows"] == 24 and meta["sources"][:2] == ["judge-a", "second"]
    read = meta["inputs"]["scores"]
    assert [(r["source"], r["scores_artifact"], r["judge_model"]) for r in read] == [
        ("judge-a", "scores-judge-a", "m1"), ("second", "scores-judge-b", "m1")]
    for r, d in zip(read, (a, b)):
        assert r["summary_json"] == str((d / "summary.json").resolve())
        assert r["summary_sha256"] == hashlib.sha256((d / "summary.json").read_bytes()).hexdigest()
    (data_file,) = meta["inputs"]["data_files"]
    assert data_file["path"] == str(data.resolve())
    assert data_file["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    config = {u.key: json.loads(u.value_json) for u in run.config.update}  # as the run started, then updates
    config.update({u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
                   for u in r.config.update})
    assert config["inputs"] == meta["inputs"] and config["resamples"] == 30
    summary = {u.key: json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "summary"
               for u in r.summary.update}
    report = json.loads((out / "agreement.json").read_text())
    pair = report["pairs"][0]
    assert summary["rows"] == 24
    assert summary[f"pearson/{pair['a']} vs {pair['b']}"] == pytest.approx(pair["statistics"]["pearson"]["estimate"])
    assert kinds[-1] == "exit" and records[-1].exit.exit_code == 0
