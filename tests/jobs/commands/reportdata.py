"""Inputs for the report tests, made by hand with pyarrow (no Ray): a score output dir whose shards
look like `judgefleet score`'s, and two score dirs with a data file for `agree`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import pyarrow as pa

from jobs.data.shards import write_shard
from tests.jobs.agreement.scoredirs import gold_mean, records, write_data, write_score_dir

HOSTILE = '<script>window.__pwned = 1; console.error("pwned")</script><img src=x onerror="window.__pwned = 2">'

_SCHEMA = pa.schema([
    ("id", pa.string()), ("topic", pa.string()), ("quality", pa.string()), ("instruction", pa.string()),
    ("row_id", pa.string()), ("row_index", pa.int64()), ("scores", pa.list_(pa.int64())), ("score", pa.float64()),
    ("score_expected", pa.float64()), ("feedbacks", pa.list_(pa.string())), ("errors", pa.list_(pa.string())),
    ("error_reasons", pa.list_(pa.string())), ("judge_model", pa.string()), ("judge_backend", pa.string()),
    ("judge_member", pa.string()), ("judge_model_file", pa.string()), ("judge_model_sha256", pa.string()),
    ("prompt_tokens", pa.int64()), ("completion_tokens", pa.int64()),
])


def score_rows(n: int = 14) -> List[dict]:
    """Rows as score writes them: two samples each; row 0 (the lowest score) has hostile markup as
    feedback, row 5 has one
    unparsed sample, row 7 timed out (no score)."""
    rows = []
    for i in range(n):
        scores = [1 + (i * 3) % 5, 1 + (i * 3 + i % 2) % 5]
        feedbacks = [f"feedback {i}.{k}: the response {'helps' if s > 2 else 'misses'}" for k, s in enumerate(scores)]
        errors = reasons = None
        if i == 0:
            feedbacks[0] = HOSTILE
        if i == 5:
            scores, feedbacks = [scores[0], None], [feedbacks[0], "no verdict here"]
            errors, reasons = ["sample 2: no [RESULT] with a score 1-5"], ["unparsed_verdict"]
        if i == 7:
            scores, feedbacks = [None, None], [None, None]
            errors, reasons = ["judge_timeout: no answer within 30 s"] * 2, ["judge_timeout"] * 2
        got = [s for s in scores if s is not None]
        rows.append({
            "id": f"r{i:02d}", "topic": ["helpfulness", "safety", "<b>style</b>"][i % 3],
            "quality": "strong" if i % 2 else "weak", "instruction": f"question {i}: how do I <b>do</b> this?",
            "row_id": f"r{i:02d}", "row_index": i, "scores": scores, "score": sum(got) / len(got) if got else None,
            "score_expected": sum(got) / len(got) + 0.1 if got else None, "feedbacks": feedbacks, "errors": errors,
            "error_reasons": reasons, "judge_model": "gemma3-270m", "judge_backend": "llama.cpp", "judge_member": "m0",
            "judge_model_file": "gemma.gguf", "judge_model_sha256": "ab" * 32, "prompt_tokens": 100 + i,
            "completion_tokens": 20 + i,
        })
    return rows


def write_score_shards(out: Path, rows: List[dict], shard_rows: int = 5) -> List[Path]:
    (out / "scores").mkdir(parents=True, exist_ok=True)
    shards = []
    for k in range(0, len(rows), shard_rows):
        path = out / "scores" / f"part-{k // shard_rows:05d}.parquet"
        write_shard(path, pa.Table.from_pylist(rows[k:k + shard_rows], schema=_SCHEMA))
        shards.append(path)
    return shards


def agree_inputs(tmp: Path):
    """A data file with the `gold` reference and two judges' score dirs, each with a summary.json
    that has speed numbers (as score writes them) for the judge cards."""
    recs = records()
    data = write_data(tmp / "data.jsonl", recs)
    good, noise = [], []
    for i, r in enumerate(recs):
        g = gold_mean(r) or 3
        good.append([int(min(5, max(1, round(g) + d))) for d in (0, (i % 3) - 1, 0)])
        noise.append([1 + (i * 3) % 5, 1 + (i * 11) % 5, 1 + (i * 13 + 2) % 5])
    a = write_score_dir(tmp / "judge-a", recs, good, judge_model="m1")
    b = write_score_dir(tmp / "judge-b", recs, noise, judge_model="m2", shard_rows=7)
    for d, rate in ((a, 0.8), (b, 2.5)):
        (d / "summary.json").write_text(json.dumps({
            "rows": len(recs), "parse_rate": 0.97, "samples_per_s": rate, "tokens_per_s": 40 * rate,
            "wall_time_s": 3 * len(recs) / rate, "total_time_s": 3 * len(recs) / rate + 20,
            "judge_backends": {"llama.cpp": len(recs)}}))
    return data, a, b
