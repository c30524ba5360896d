"""The `judgefleet` command: one thin verb per job, each parsing arguments and calling a run()."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from jobs.errors import USER_ERRORS

EXAMPLES = """examples:
  judgefleet score conf/quickstart.yaml
  judgefleet score conf/quickstart.yaml dataset.limit=5 sampling.num_samples=1 output.dir=runs/five
  judgefleet score conf/quickstart.yaml --restart     # score again what output.dir already holds
  judgefleet serve conf/quickstart.yaml serve.port=8001
  judgefleet bench conf/bench.yaml dataset.limit=6
  judgefleet agree runs/judge-a runs/judge-b data.json --ref gpt4_score --group idx
  judgefleet pairs hhh_alignment_eval.json --chosen chosen_instruction --rejected rejected_instruction --out pairs.jsonl
  judgefleet study conf/study.yaml                    # the quantization study (quantize, serve all, score, tables)
  judgefleet quantize                                 # the bundled judge's ladder, into the model cache
  judgefleet quantize model-f16.gguf --types Q4_K_M,Q8_0 --out models/
"""


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="judgefleet", description="LLM-as-judge evaluation on Ray.", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    for name, help_text in (
        ("score", "score a dataset with a judge; writes scores/part-*.parquet and summary.json"),
        ("serve", "run the judge route in the foreground (OpenAI API) until Ctrl-C"),
        ("bench", "judge the same rows several ways (the article's method, the bare engine, judgefleet, llama-server, vLLM's server) and compare"),
        ("study", "the quantization study: every rung of a GGUF ladder (and other judges) scores the same rows, "
                  "served together; quality with intervals, speed and cost"),
    ):
        verb = verbs.add_parser(name, help=help_text, description=help_text)
        verb.add_argument("config", help="a YAML config, e.g. conf/quickstart.yaml")
        verb.add_argument("overrides", nargs="*", help="key=value settings that override the config")
        if name == "study":
            verb.add_argument("--restart", action="store_true",
                              help="score every run again (default: finished runs and shards are kept)")
        if name == "score":
            verb.add_argument("--restart", action="store_true",
                              help="discard the scores already in output.dir and score every row again "
                                   "(default: keep finished shards and score only the rest)")
            verb.add_argument("--retry-errors", action="store_true",
                              help="also judge again the rows of finished shards that ended with errors")
    agree = verbs.add_parser(
        "agree", help="how far judges agree with each other, with reference columns and with themselves (95%% intervals)",
        description="Compare score dirs and reference columns on the rows they share (joined on row_id): every "
                    "pair's correlations and agreement with bootstrap intervals, two judges against a reference, "
                    "and each judge's self-consistency. Writes agreement.json, agreement.md and report.html, "
                    "and records a W&B run.")
    agree.add_argument("sources", nargs="+", metavar="SOURCE",
                       help="a `judgefleet score` output dir or a data file (.json/.jsonl/.csv/.parquet); NAME=PATH names it")
    agree.add_argument("--ref", action="append", default=[], metavar="COLUMN",
                       help="a reference score column (numbers or lists of runs), read from the first SOURCE that has it; repeatable")
    agree.add_argument("--label", metavar="COLUMN",
                       help="pairwise score dirs (relative, pairwise_absolute): the column saying which response "
                            "is better (A or B); accuracy, position bias, ties, length bias, McNemar")
    agree.add_argument("--group", metavar="COLUMN", help="resample whole groups of rows (e.g. a question id) in the bootstrap")
    agree.add_argument("--out", default="runs/agreement", metavar="DIR",
                       help="where agreement.json/.md, report.html and the W&B run go (default: %(default)s)")
    agree.add_argument("--id-field", metavar="COLUMN",
                       help="the dataset.id_field the score dirs were scored with (default: read from their job.json, else a content hash)")
    agree.add_argument("--seed", type=int, default=0, metavar="N", help="bootstrap seed (default: %(default)s)")
    agree.add_argument("--resamples", type=int, default=2000, metavar="N", help="bootstrap resamples (default: %(default)s)")
    agree.add_argument("--tracking", choices=("offline", "online", "disabled"), default="offline",
                       help="the W&B run: offline under --out/wandb (upload later with `wandb sync`), online "
                            "(needs $WANDB_API_KEY), or none (default: %(default)s)")
    pairs = verbs.add_parser(
        "pairs", help="A/B rows for relative grading from two whole Prometheus absolute prompts per row",
        description="Split each row's two whole Prometheus absolute prompts (the chosen and the rejected response's) "
                    "into instruction, response_a, response_b, reference_answer and rubric, the chosen response "
                    "at A or B by a seeded hash of the row (`label` says which), so `judgefleet score` can judge "
                    "them in relative mode in both orders and `judgefleet agree --label label` can measure it. "
                    "Writes one JSONL row per input row; a row that cannot be split keeps its place with `error`.")
    pairs.add_argument("source", metavar="SOURCE", help="a .json, .jsonl, .csv or .parquet file")
    pairs.add_argument("--chosen", required=True, metavar="COLUMN", help="the column of the chosen response's prompt")
    pairs.add_argument("--rejected", required=True, metavar="COLUMN",
                       help="the column of the rejected response's prompt")
    pairs.add_argument("--out", required=True, metavar="FILE.jsonl", help="the JSONL file to write")
    pairs.add_argument("--seed", type=int, default=0, metavar="N",
                       help="which rows get the chosen response as A (default: %(default)s)")
    quantize = verbs.add_parser(
        "quantize", help="write a ladder of GGUF files (one per llama.cpp quantization type) from a 16-bit GGUF",
        description="Quantize a 16-bit GGUF with llama.cpp's own quantizer, one file per type, each with its sha256; "
                    "files already there with the right digest are kept. Without SOURCE: the bundled judge, first "
                    "expanded from its Q4_K_M to F16 (so the ladder re-quantizes Q4_K_M's values). Writes quantize.json "
                    "beside the files.")
    quantize.add_argument("source", nargs="?", metavar="SOURCE",
                          help="an F16, BF16 or F32 GGUF file (default: the bundled judge)")
    quantize.add_argument("--types", metavar="T1,T2,...",
                          help="llama.cpp file types (default: Q2_K,Q3_K_M,Q4_K_M,Q5_K_M,Q8_0,F16)")
    quantize.add_argument("--out", metavar="DIR",
                          help="where the files go (default: the model cache, a folder named for the source's sha256)")
    k8s = verbs.add_parser("k8s", help="print a KubeRay manifest generated from a config (rayservice: its serve: route)",
                           description="Print a KubeRay RayService whose serveConfigV2 is CONFIG's serve: section, "
                                       "on the worker groups of a RayCluster manifest.")
    k8s.add_argument("kind", choices=("rayservice",), help="the manifest to write")
    k8s.add_argument("config", help="a YAML config with a serve: section, e.g. conf/examples/mixed-fleet.yaml")
    k8s.add_argument("--cluster", default="k8s/raycluster-mixed-fleet.yaml", metavar="FILE",
                     help="the RayCluster whose spec the RayService runs on (default: %(default)s)")
    k8s.add_argument("--name", default="judgefleet", help="metadata.name (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.verb == "k8s":
        try:
            from jobs.commands.k8s import rayservice
            from jobs.config import load_config

            print(rayservice(args.config, load_config(args.config).serve, args.cluster, args.name), end="")
            return 0
        except USER_ERRORS as e:
            print(f"judgefleet: error: {e}", file=sys.stderr)
            return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.verb == "agree":
            from jobs.commands.agree import AgreeSettings, run as agree_run

            agree_run(AgreeSettings(tuple(args.sources), tuple(args.ref), args.group, args.out, args.id_field,
                                    args.seed, args.resamples, args.tracking, args.label))
            return 0
        if args.verb == "pairs":
            from jobs.commands.pairs import PairsSettings, run as pairs_run

            result = pairs_run(PairsSettings(args.source, args.chosen, args.rejected, args.out, args.seed))
            if not result["pairs"]:
                print(f"judgefleet: error: no row of {args.source} could be split into a pair", file=sys.stderr)
            return 0 if result["pairs"] else 1
        if args.verb == "quantize":
            from jobs.commands.quantize import QuantizeSettings, run as quantize_run

            types = None if args.types is None else tuple(args.types.split(","))
            quantize_run(QuantizeSettings(args.source, types, args.out))
            return 0
        from jobs.config import load_config, load_study_config

        cfg = (load_study_config if args.verb == "study" else load_config)(args.config, args.overrides)
        if args.verb == "score":
            from jobs.commands.score import run

            summary = run(cfg, restart=args.restart, retry_errors=args.retry_errors)
            return 0 if summary["rows"] == 0 or summary["scored"] > 0 else 1
        if args.verb == "study":
            from jobs.commands.study import run as study_run

            study_run(cfg, restart=args.restart)
            return 0
        if args.verb == "bench":
            from jobs.commands.bench import run as bench_run

            bench_run(cfg)
            return 0
        from jobs.commands.serve import run as serve_run

        serve_run(cfg)
        return 0
    except USER_ERRORS as e:
        print(f"judgefleet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("judgefleet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
