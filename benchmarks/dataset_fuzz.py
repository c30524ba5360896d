"""A fuzz campaign for datasets: hypothesis-drawn hostile files scored end to end, then resumed.

    python -m benchmarks.dataset_fuzz [--examples 100] [--max-rows 700] [--seed 0] [--minutes 30]

Each example writes a JSON, JSONL, CSV or Parquet dataset, or a directory of several
(tests/jobs/data/fuzz_datasets.py: columns whose type changes at a drawn row, BOMs, text that
is not UTF-8, broken lines, huge and empty fields, repeated rows and ids, any unicode), scores it
with `judgefleet score` through the real pipeline (a local Ray, Ray Data, the stand-in judge
over HTTP in its own process), stops the run after its first shard (and drops the last shard's
manifest, as a kill while writing would), runs it again, and checks the output: the job ends,
one output row per input row, unique row ids, every unscored row with its error and reason code,
every input value kept, one schema over all shards. Failures are recorded, not raised, so the
campaign runs every example; writes dataset-fuzz.json and dataset-fuzz.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

from benchmarks.common import REPO, machine_description, stub_judge, write_report

# Beyond the list, each fixed with a test (tests/jobs/data/test_hostile_inputs.py): what the
# fuzzing found, and what reading the readers for it found (each shown failing on the code before).
FOUND_BY_FUZZING = [
    "pyarrow types [0.5, True] as doubles, True as 1.0: a column of numbers and flags changed its flags "
    "into numbers (the reader fuzz test's first failure, in the new column scan; main did the same within "
    "one block; test_flags_beside_numbers_stay_flags).",
]
FOUND_WHILE_BUILDING = [
    "A JSONL line holding an integer of more than 4300 digits raised a ValueError without `.msg`, and a "
    "line of 3000 brackets a RecursionError: either stopped the job. Both are unreadable rows now.",
    "JSONL was split on a lone \\r too (text mode): one line made two rows in the stream and one in the "
    "progress count. Lines end at \\n only, as JSON Lines says.",
    "An input column named `_prompt` was overwritten by the rendered prompt, and `input_score` beside "
    "`score` lost one of the two to the rename (test_input_columns_named_like_internal_ones_are_kept_aside).",
    "A first row without a response refused the whole job ('dataset has no column'): the check read the "
    "first record only; it reads the whole dataset's columns now, and that row is a bad_row.",
    "A dict column whose keys are ids would grow one Parquet column per key: past 100 keys it is JSON text.",
]


def campaign(examples: int, max_rows: int, seed: int, minutes: float) -> dict:
    import ray
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from jobs.commands.score import ScoreRun, run
    from jobs.config import load_config
    from jobs.runtime.pipeline import RESULT_COLUMNS
    from rich.console import Console
    from tests.conftest import QUICKSTART
    from tests.jobs.data import fuzz_datasets as fuzz

    results: list = []
    deadline = time.monotonic() + minutes * 60
    quiet = Console(file=open(os.devnull, "w"))

    class Stop(Exception):
        pass

    with stub_judge() as url, tempfile.TemporaryDirectory() as tmp:
        ray.init(num_cpus=4, include_dashboard=False, logging_level=logging.ERROR)

        @hypothesis_seed(seed)
        @settings(max_examples=examples, deadline=None, database=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(plan=fuzz.plans(max_rows=max_rows))
        def one(plan):
            if time.monotonic() > deadline:
                return
            n = len(results)
            root = Path(tmp) / f"ex{n}"
            exp = fuzz.write(plan, root / "data")
            out = root / "out"
            cfg = load_config(QUICKSTART, [
                f"judge.url={url}", "judge.model=stub-judge", f"dataset.path={exp.path}", f"output.dir={out}",
                "output.shard_rows=40", "output.group_by=[]", "tracking.mode=disabled", "sampling.num_samples=1",
                "judge.max_in_flight=16", "judge.max_retries=1", "judge.timeout_s=20",
                *([f"dataset.id_field={exp.id_field}"] if exp.id_field else [])])
            entry = {"plan": plan.describe(), "format": plan.fmt, "rows": len(exp.records),
                     "unreadable": sum(exp.unreadable), "stopped": False, "problems": []}  # before the id checks
            started = time.monotonic()

            def stop_after_first_shard(_rows):
                if any((out / "scores").glob("part-*.manifest.json")):
                    raise Stop

            try:
                try:
                    ScoreRun(cfg, quiet, on_batch=stop_after_first_shard).run()
                except Stop:
                    entry["stopped"] = True
                    manifests = sorted((out / "scores").glob("part-*.manifest.json"))
                    if len(manifests) > 1:
                        manifests[-1].unlink()
                summary = run(cfg, console=quiet)
                entry["scored"] = summary["scored"]
                entry["problems"] = fuzz.check_output(exp, out, RESULT_COLUMNS)
                if summary["rows"] != len(exp.records):
                    entry["problems"].append(f"summary rows {summary['rows']} for {len(exp.records)} input rows")
            except Exception as e:  # noqa: BLE001 - a campaign records what failed and goes on
                entry["problems"].append(f"job failed: {type(e).__name__}: {str(e)[:300]}")
                entry["traceback"] = traceback.format_exc()[-2000:]
            entry["seconds"] = round(time.monotonic() - started, 2)
            results.append(entry)
            print(f"[{n + 1}] {plan.fmt} {len(exp.records)} rows {entry['seconds']} s "
                  f"{'OK' if not entry['problems'] else 'FAIL: ' + entry['problems'][0]}", flush=True)

        started = time.monotonic()
        one()
        ray.shutdown()
    failed = [r for r in results if r["problems"]]
    kinds = Counter(p.split(":")[0] if p.startswith("job failed") else p.split(": ", 1)[-1].split(" ")[0]
                    for r in failed for p in r["problems"][:1])
    return {
        "machine": machine_description(),
        "settings": {"examples": examples, "max_rows": max_rows, "seed": seed, "minutes": minutes},
        "examples_run": len(results),
        "examples_failed": len(failed),
        "rows": sum(r["rows"] for r in results),
        "unreadable_rows": sum(r["unreadable"] for r in results),
        "stopped_and_resumed": sum(r["stopped"] for r in results),
        "by_format": dict(Counter(r["format"] for r in results)),
        "failures_by_kind": dict(kinds),
        "wall_s": round(time.monotonic() - started, 1),
        "failures": failed[:20],
        "found_by_fuzzing": FOUND_BY_FUZZING,
        "found_while_building": FOUND_WHILE_BUILDING,
    }


def markdown(r: dict) -> str:
    lines = [
        "# Dataset fuzz campaign",
        "",
        f"`python -m benchmarks.dataset_fuzz --examples {r['settings']['examples']} --max-rows "
        f"{r['settings']['max_rows']} --seed {r['settings']['seed']}` on {r['machine']}.",
        "",
        f"{r['examples_run']} hostile datasets ({', '.join(f'{k} {v}' for k, v in sorted(r['by_format'].items()))}), "
        f"{r['rows']:,} input rows, {r['unreadable_rows']:,} of them broken lines or text that is not UTF-8; "
        f"{r['stopped_and_resumed']} runs were stopped after their first shard and resumed. {r['wall_s']} s.",
        "",
        f"**Examples failing a property: {r['examples_failed']} of {r['examples_run']}.**",
        "",
    ]
    if r["failures"]:
        lines += ["| plan | first problem |", "| --- | --- |"]
        lines += [f"| `{f['plan'][:160]}` | {f['problems'][0][:200].replace('|', '/')} |" for f in r["failures"]]
        lines.append("")
    lines += ["Properties checked per example: the job ends; one output row per input row; unique row ids; "
              "`row_index` each input position once; every unscored row has errors with reason codes; rows that "
              "must be unreadable (broken lines, text that is not UTF-8, missing or repeated explicit ids) are "
              "`unreadable_row`; plain rows are scored; every input value is kept (JSON text in a column of mixed "
              "types); one schema over all shards.", "",
              "Found by the fuzzing while it was built (fixed, with a test):", ""]
    lines += [f"- {f}" for f in r["found_by_fuzzing"]]
    lines += ["", "Found reading the readers for it (fixed, each with a test):", ""]
    lines += [f"- {f}" for f in r["found_while_building"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=100)
    parser.add_argument("--max-rows", type=int, default=700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--minutes", type=float, default=30.0, help="stop drawing new examples after this long")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = parser.parse_args()
    report = campaign(args.examples, args.max_rows, args.seed, args.minutes)
    write_report(args.out, "dataset-fuzz", report, markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
