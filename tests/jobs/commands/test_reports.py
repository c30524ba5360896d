"""report.html of `score` and `agree`: what it shows is in the JSON beside it, every value from data
is escaped, and it renders in headless Chromium with no console errors and no script at all.

The score report comes from `ScoreRun.finish` over shards made by hand (no Ray, no judge); the
agree report from `judgefleet agree` over small score dirs. Chromium is Debian's (/usr/bin/chromium),
driven by Playwright; screenshots are kept in the test's tmp dir and copied to /tmp/report-shots/.
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jobs.cli import main
from jobs.data.report_page import esc, table
from tests.conftest import QUICKSTART
from tests.jobs.commands.reportdata import HOSTILE, agree_inputs, score_rows, write_score_shards

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/report-shots")


def score_output(out: Path) -> dict:
    """What `judgefleet score` leaves when it finishes, from hand-made shards: ScoreRun.finish itself."""
    from rich.console import Console

    from jobs.commands.score import ScoreRun
    from jobs.config import load_config
    from jobs.data.summary import SummaryBuilder

    shards = write_score_shards(out, score_rows())
    cfg = load_config(QUICKSTART, ["judge.url=http://127.0.0.1:9/v1", "tracking.mode=disabled", f"output.dir={out}"])
    run = ScoreRun(cfg, console=Console(file=io.StringIO()))
    run.out_dir = out
    builder = SummaryBuilder(cfg.judge.mode, cfg.output.group_by)
    for shard in shards:
        builder.add(pq.read_table(shard))
    return run.finish(builder, None, time.perf_counter() - 7.0, shards)


@pytest.fixture(scope="module")
def score_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("score") / "out"
    score_output(out)
    return out


@pytest.fixture(scope="module")
def agree_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    data, a, b = agree_inputs(tmp)
    out = tmp / "agreement"
    rc = main(["agree", f"<i>judge-a</i>={a}", str(b), str(data), "--ref", "gold", "--group", "idx", "--out", str(out),
               "--resamples", "50", "--tracking", "disabled"])
    assert rc == 0
    return out


def test_score_report_block_is_in_summary_json_and_the_page_escapes_feedback(score_dir):
    summary = json.loads((score_dir / "summary.json").read_text())
    report = summary["report"]
    assert report["text_field"] == "instruction"
    # The lowest- and highest-scored rows, bounded, each once, lowest first (ties in input order).
    assert [r["row_id"] for r in report["lowest"]] == ["r00", "r05", "r10", "r02", "r12"]
    assert [r["score"] for r in report["highest"]] == [5.0, 4.5, 4.5, 4.0, 3.5]
    assert not {r["row_id"] for r in report["lowest"]} & {r["row_id"] for r in report["highest"]}
    assert report["lowest"][0]["feedbacks"][0] == HOSTILE
    assert report["lowest"][1]["errors"] == ["sample 2: no [RESULT] with a score 1-5"]
    # Sample score counts per group add up to the summary's overall counts.
    by_topic = report["score_counts_by_group"]["topic"]
    assert set(by_topic) == {"helpfulness", "safety", "<b>style</b>"}
    total = {}
    for counts in by_topic.values():
        for k, v in counts.items():
            total[k] = total.get(k, 0) + v
    assert total == summary["sample_score_counts"]
    assert report["groups_left_out"] == {"quality": 0, "topic": 0}

    page = (score_dir / "report.html").read_text()
    assert "<script" not in page and "<img src=x" not in page
    assert esc(HOSTILE) in page and "&lt;b&gt;style&lt;/b&gt;" in page
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    for heading in ("Headline", "Scores", "By quality", "By topic", "Errors", "Lowest-scored rows",
                    "Highest-scored rows", "Throughput and time"):
        assert f"<h2>{heading}</h2>" in page
    assert "judge_timeout" in page and "unparsed_verdict" in page


def test_a_failing_report_warns_and_leaves_the_summary_alone(tmp_path, caplog):
    from jobs.data.score_report import write_report

    summary = {"mode": "absolute", "rows": 0}
    assert write_report(tmp_path, summary, [tmp_path / "missing.parquet"]) is None
    assert "report" not in summary and "report.html was not written" in caplog.text
    assert not (tmp_path / "report.html").exists()


def test_tables_escape_every_cell():
    html = table(["<h>"], [["<td>x</td>", None, 'a"b']])
    assert "&lt;h&gt;" in html and "&lt;td&gt;x&lt;/td&gt;" in html and "a&quot;b" in html and "<td>-</td>" in html


def test_agree_report_json_holds_what_the_page_shows(agree_dir):
    report = json.loads((agree_dir / "agreement.json").read_text())
    names = [s["name"] for s in report["sources"]]
    assert names[:2] == ["<i>judge-a</i>", "judge-b"]
    dist = report["figures"]["distributions"]
    assert set(dist) == set(names) and sum(n for _, n in dist["gold"]) == 22
    scatter = {(s["a"], s["b"]): s for s in report["figures"]["scatter"]}
    assert set(scatter) == {("<i>judge-a</i>", "gold"), ("judge-b", "gold")}  # each judge against the reference
    pair = next(p for p in report["pairs"] if (p["a"], p["b"]) == ("judge-b", "gold"))
    assert sum(n for _, _, n in scatter[("judge-b", "gold")]["points"]) == pair["n"]
    cards = {c["judge"]: c for c in report["judge_cards"]}
    card = cards["judge-b"]
    assert card["reference"] == "gold" and card["pearson"] == pair["statistics"]["pearson"]
    assert card["samples_per_s"] == 2.5 and card["parse_rate"] == 0.97 and card["backends"] == ["llama.cpp"]
    assert card["self_alpha"]["estimate"] is not None
    page = (agree_dir / "report.html").read_text()
    assert "&lt;i&gt;judge-a&lt;/i&gt;" in page and "<i>judge-a" not in page and "<script" not in page
    for heading in ("Headline", "Judge cards", "Correlation", "Agreement on the 1-5 scale",
                    "Two judges against a reference (Pearson)", "Score distributions", "Against each reference"):
        assert f"<h2>{heading}</h2>" in page


# -- in a browser ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium (apt-get install chromium) to open the reports")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM))
        yield b
        b.close()


def open_report(browser, path: Path, shot: Path):
    """The page at `path`, what it logged, and a screenshot of the whole of it."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    logged = []
    page.on("console", lambda m: logged.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: logged.append(f"pageerror: {e}"))
    page.on("dialog", lambda d: (logged.append(f"dialog: {d.message}"), d.dismiss()))
    page.goto(path.resolve().as_uri(), wait_until="load")
    # A full-page screenshot fails in this Chromium ("Unable to capture screenshot"): grow the viewport instead.
    page.set_viewport_size({"width": 1280, "height": page.evaluate("document.documentElement.scrollHeight")})
    page.screenshot(path=str(shot))
    SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, SHOTS / shot.name)
    return page, logged


def check_page(page, logged, headings):
    assert not [m for m in logged if m.startswith(("error", "pageerror", "dialog"))], logged
    assert page.evaluate("document.scripts.length") == 0
    assert page.evaluate("window.__pwned") is None
    shown = page.locator("h2").all_inner_texts()
    assert all(h in shown for h in headings), shown
    assert page.locator("table").count() >= len(headings) - 2
    assert page.locator("table td").count() > 20
    # Every plot decoded and drawn.
    sizes = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth])")
    assert sizes and all(done and width > 0 for done, width in sizes), sizes


def test_score_report_in_chromium(browser, score_dir, tmp_path):
    page, logged = open_report(browser, score_dir / "report.html", tmp_path / "score-report.png")
    check_page(page, logged, ["Headline", "Scores", "By topic", "Errors", "Lowest-scored rows", "Throughput and time"])
    body = page.inner_text("body")
    assert HOSTILE in body  # shown as text, never run
    assert "<b>style</b>" in body
    assert page.locator("b").count() == 0 and page.locator("img[src='x']").count() == 0
    page.close()


def test_agree_report_in_chromium(browser, agree_dir, tmp_path):
    page, logged = open_report(browser, agree_dir / "report.html", tmp_path / "agree-report.png")
    check_page(page, logged, ["Headline", "Judge cards", "Correlation", "Agreement on the 1-5 scale",
                              "Score distributions", "Against each reference", "Confusion matrices"])
    body = page.inner_text("body")
    assert "<i>judge-a</i>" in body and page.locator("i").count() == 0
    assert "r(a) - r(b)" in body and "Pearson" in body
    page.close()


@pytest.fixture(scope="module")
def study_report(tmp_path_factory):
    from jobs.study import analysis, report
    from tests.jobs.study.studydata import make_study

    st = make_study(tmp_path_factory.mktemp("study"))
    result = analysis.analyze(st.cfg, st.plan, st.out, st.peaks)
    result.update(dataset=str(st.data), from_bundled=True, wall_s=12.0, judges=[])
    return report.write(st.out, result)[2]


def test_study_report_in_chromium(browser, study_report, tmp_path):
    from tests.jobs.study.studydata import RUNG

    page, logged = open_report(browser, study_report, tmp_path / "study-report.png")
    check_page(page, logged, ["Headline", "Quality", "Correlations with their intervals", "Scores", "Notes"])
    body = page.inner_text("body")
    assert RUNG in body and page.locator("b").count() == 0  # the hostile judge name is text
    assert "Pearson with gold" in body and "$ per evaluation" in body and "peak memory" in body
    page.close()
