"""Small inputs for `agree` tests: a data file, and score dirs shaped as `judgefleet score` writes
them (Parquet shards with manifests, job.json, summary.json), made by hand with pyarrow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.data.datasource import content_hash

QUESTIONS, ANSWERS = 8, 3


def records() -> List[dict]:
    """24 rows (8 questions x 3 answers). `gold` holds two reference runs: as a list, as a string
    holding a list, once unreadable text and once null."""
    out = []
    for q in range(QUESTIONS):
        for a in range(ANSWERS):
            i = q * ANSWERS + a
            first, second = 1 + (i * 7) % 5, 1 + (i * 7 + (i % 3 == 0)) % 5
            gold = [first, second] if i % 2 else f"[{first}, {second}]"
            out.append({"idx": f"q{q}", "instruction": f"question {q}, answer {a}", "gold": gold})
    out[5]["gold"] = "n/a"
    out[6]["gold"] = None
    return out


def write_data(path: Path, rows: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def gold_mean(record: dict) -> Optional[float]:
    g = record["gold"]
    g = json.loads(g) if isinstance(g, str) and g.startswith("[") else g
    return sum(g) / len(g) if isinstance(g, list) else None


def write_score_dir(out: Path, rows: Sequence[dict], samples: Sequence[Optional[List[Optional[int]]]],
                    judge_model: str = "judge-x", id_field: Optional[str] = None, shard_rows: int = 10) -> Path:
    """One row per record: its input columns plus row_id, scores, score (mean of the scored
    samples), errors and judge_model, split into shards of `shard_rows`."""
    table_rows = []
    for n, (rec, s) in enumerate(zip(rows, samples)):
        scored = [v for v in s or [] if v is not None]
        table_rows.append({**rec, "row_id": str(rec[id_field]) if id_field else content_hash(rec), "row_index": n,
                           "scores": s, "score": sum(scored) / len(scored) if scored else None,
                           "errors": None if scored else ["judge_timeout: no answer"],
                           "judge_model": judge_model})
    (out / "scores").mkdir(parents=True)
    schema = pa.schema([("idx", pa.string()), ("instruction", pa.string()), ("gold", pa.string()),
                        ("row_id", pa.string()), ("row_index", pa.int64()), ("scores", pa.list_(pa.int64())),
                        ("score", pa.float64()), ("errors", pa.list_(pa.string())), ("judge_model", pa.string())])
    for k in range(0, len(table_rows), shard_rows):
        chunk = [{**r, "gold": r["gold"] if r["gold"] is None or isinstance(r["gold"], str) else json.dumps(r["gold"])}
                 for r in table_rows[k:k + shard_rows]]
        shard = out / "scores" / f"part-{k // shard_rows:05d}.parquet"
        pq.write_table(pa.Table.from_pylist(chunk, schema=schema), shard)
        shard.with_name(shard.name.replace(".parquet", ".manifest.json")).write_text(
            json.dumps({"shard": shard.name, "rows": len(chunk), "row_ids": [r["row_id"] for r in chunk]}))
    (out / "job.json").write_text(json.dumps({"fingerprint": {"dataset.id_field": id_field}}))
    (out / "summary.json").write_text(json.dumps({"rows": len(table_rows)}))
    return out
