"""The study's numbers against independent computations on the same score dirs: scipy's Pearson
on the rows both sides scored, the paired difference, the rows left out, the cost projection."""

import json

import numpy as np
import pytest
import scipy.stats

from jobs.study import analysis, report
from tests.jobs.agreement.scoredirs import gold_mean
from tests.jobs.study.studydata import ORIGINAL, RUNG, make_study, samples


def row_means(s):
    out = []
    for row in s:
        got = [v for v in row or [] if v is not None]
        out.append(np.mean(got) if got else np.nan)
    return np.array(out)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    st = make_study(tmp_path_factory.mktemp("study"))
    st.result = analysis.analyze(st.cfg, st.plan, st.out, st.peaks)
    return st


def test_pearson_with_the_originals_second_run_and_with_the_reference_match_scipy(study):
    q = {x["judge"]: x for x in study.result["quality"]}
    rung1, orig1, orig2 = row_means(samples(1, 1.4)), row_means(samples(11, 0.6)), row_means(samples(12, 0.6))
    gold = np.array([gold_mean(r) if gold_mean(r) is not None else np.nan for r in study.rows])

    def r(x, y):
        ok = np.isfinite(x) & np.isfinite(y)
        return scipy.stats.pearsonr(x[ok], y[ok])[0], int(ok.sum()), int((~ok).sum())

    est, n, missing = r(rung1, orig2)
    assert q[RUNG]["pearson_original"]["estimate"] == pytest.approx(est)
    assert (q[RUNG]["pearson_original"]["n"], q[RUNG]["pearson_original"]["rows_missing"]) == (n, missing)
    assert q[RUNG]["pearson_original"]["with"] == f"{ORIGINAL}#r2"
    est, n, missing = r(rung1, gold)
    assert q[RUNG]["pearson_reference"]["estimate"] == pytest.approx(est) and missing == 3  # 2 without gold, 1 unscored
    # The original's "PCC (orig)" is its own run 1 against run 2.
    assert q[ORIGINAL]["pearson_original"]["estimate"] == pytest.approx(r(orig1, orig2)[0])
    # The difference: on rows all three have, r(rung, gold) - r(original run 1, gold).
    ok = np.isfinite(rung1) & np.isfinite(orig1) & np.isfinite(gold)
    diff = scipy.stats.pearsonr(rung1[ok], gold[ok])[0] - scipy.stats.pearsonr(orig1[ok], gold[ok])[0]
    assert q[RUNG]["difference_from_original"]["estimate"] == pytest.approx(diff)
    assert q[ORIGINAL]["difference_from_original"]["estimate"] is None
    # The noisier rung agrees less with the reference than the original does.
    assert q[RUNG]["pearson_reference"]["estimate"] < q[ORIGINAL]["pearson_reference"]["estimate"]
    for stat in ("pearson_original", "pearson_reference", "run_to_run"):
        i = q[RUNG][stat]
        assert i["low"] <= i["estimate"] <= i["high"], (stat, i)
    assert study.result["clusters"] == 8  # resampled by question


def test_speed_comes_from_the_runs_alone_and_cost_projects_it(study):
    speed = {s["judge"]: s for s in study.result["speed"]}
    assert speed[RUNG]["samples_per_s"] == 1.0 and speed[RUNG]["measured"] == "alone"
    assert speed[RUNG]["together_samples_per_s"] == 0.5 and speed[ORIGINAL]["together_samples_per_s"] == 1.5
    assert speed[RUNG]["peak_memory_bytes"] == 900_000_000 and speed[RUNG]["bits_per_weight"] == 7.07
    assert speed[ORIGINAL]["model"] == "bundled:gemma3-270m-q4_k_m" and speed[ORIGINAL]["file_bytes"] is None
    judgments = 320 * study.cfg.sampling.num_samples
    cost = next(c for c in study.result["costs"] if c["name"] == ORIGINAL)
    assert cost["hours"] == pytest.approx(judgments / 2.0 / 3600, abs=1e-3)
    assert cost["usd"] == pytest.approx(judgments / 2.0 / 3600 * 0.5, abs=1e-4)


def test_one_repeat_says_what_it_cannot_measure(tmp_path):
    st = make_study(tmp_path, repeats=1)
    result = analysis.analyze(st.cfg, st.plan, st.out, st.peaks)
    q = {x["judge"]: x for x in result["quality"]}
    assert q[ORIGINAL]["pearson_original"]["estimate"] is None
    assert "study.repeats >= 2" in q[ORIGINAL]["pearson_original"]["method"]
    assert q[RUNG]["pearson_original"]["with"] == f"{ORIGINAL}#r1" and q[RUNG]["pearson_original"]["estimate"] is not None
    assert q[RUNG]["run_to_run"]["estimate"] is None


def test_the_files_hold_the_tables_and_escape_names(study, tmp_path):
    files = report.write(tmp_path, {**study.result, "from_bundled": True, "judges": [
        {"id": RUNG, "engine": "llama.cpp", "model": None}, {"id": ORIGINAL, "engine": "vllm",
                                                           "model": "bundled:gemma3-270m-q4_k_m"}]})
    data = json.loads(files[0].read_text())
    assert [q["judge"] for q in data["quality"]] == [RUNG, ORIGINAL]
    md = files[1].read_text()
    assert "## Quality" in md and "## Cost of the whole evaluation (320 rows x 3 samples)" in md
    assert "re-quantize" in md and "bf16" in md  # the bundled-ladder and vLLM notes
    page = files[2].read_text()
    assert "<b>g-q2_k</b>" not in page and "&lt;b&gt;g-q2_k&lt;/b&gt;" in page and "<script" not in page
