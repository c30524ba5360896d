"""Decode speed of the llama.cpp engine's context by batch size and KV layout, on the bundled judge.

    python -m benchmarks.engine_decode [--batches 8 16 24] [--context 1100] [--repeats 3]

For each layout (a KV stream per sequence, as the engine runs it since issue 13, or one unified
buffer, as it ran before) and each batch size B: B sequences are prefilled with `--context`
tokens (a vicuna Prometheus prompt is ~1000), then 20 decode steps of one token per sequence are
timed, each asking for every sequence's logits as sampling does. Layouts and sizes alternate
`--repeats` times so a noisy machine (here: +-15% between identical runs) shows as spread, not
as a difference. What `parallel: 0` rests on (serve/engines/llamacpp.py: AUTO_SEQUENCES_PER_CORE).
Writes engine_decode.json and engine_decode.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from benchmarks.common import REPO, machine_description, write_report

STEPS = 20


def decode_rate(llama_cpp, internals, model, batch_size: int, context: int, unified: bool, threads: int) -> float:
    """Generated tokens/s of B sequences decoding together, each `context` tokens deep."""
    from serve.engines.llamacpp import context_params

    params = context_params(internals, 2048, batch_size, max(0, 16 - batch_size), 512, threads, unified)
    ctx = internals.LlamaContext(model=model, params=params, verbose=False)
    batch = llama_cpp.llama_batch_init(512 + 2 * batch_size, 0, 1)
    try:
        def put(j, token, pos, seq, logits):
            batch.token[j], batch.pos[j], batch.n_seq_id[j] = token, pos, 1
            batch.seq_id[j][0], batch.logits[j] = seq, logits

        for seq in range(batch_size):  # the same filler prompt per sequence; its own KV each
            for start in range(0, context, 512):
                n = min(512, context - start)
                for k in range(n):
                    put(k, 2 if start + k == 0 else 1000 + (start + k) % 50, start + k, seq, k == n - 1)
                batch.n_tokens = n
                assert llama_cpp.llama_decode(ctx.ctx, batch) == 0
        started = time.perf_counter()
        for step in range(STEPS):
            for seq in range(batch_size):
                put(seq, 1000 + step, context + step, seq, True)
            batch.n_tokens = batch_size
            assert llama_cpp.llama_decode(ctx.ctx, batch) == 0
        return batch_size * STEPS / (time.perf_counter() - started)
    finally:
        llama_cpp.llama_batch_free(batch)
        del ctx


def run(batches, context: int, repeats: int, threads: int) -> dict:
    import llama_cpp
    from llama_cpp import _internals as internals

    from serve.engines.llamacpp import node_cores
    from serve.model_files import resolve_model_file

    threads = threads or node_cores()
    model_path = resolve_model_file("bundled:gemma3-270m-q4_k_m").path
    model = internals.LlamaModel(path_model=str(model_path), params=internals.LlamaModel.default_params(), verbose=False)
    rates = {}
    for _ in range(repeats):
        for b in batches:
            for layout, unified in (("per-sequence", False), ("unified", True)):
                rates.setdefault(f"{layout}/{b}", []).append(decode_rate(llama_cpp, internals, model, b, context, unified, threads))
    rows = [{"layout": key.split("/")[0], "batch": int(key.split("/")[1]), "runs": [round(r, 1) for r in runs],
             "median_tok_s": round(statistics.median(runs), 1)} for key, runs in rates.items()]
    return {"machine": machine_description(), "threads": threads, "context": context, "steps": STEPS, "rows": rows}


def markdown(r: dict) -> str:
    lines = ["# Engine decode speed by batch size and KV layout", "",
             f"Bundled judge (Gemma 3 270M Q4_K_M), {r['threads']} threads, each sequence {r['context']} tokens deep, "
             f"{r['steps']} decode steps a run, logits for every sequence. Machine: {r['machine']}.", "",
             "| KV layout | sequences | generated tok/s (median) | runs |", "| --- | --- | --- | --- |"]
    for row in sorted(r["rows"], key=lambda x: (x["layout"], x["batch"])):
        lines.append(f"| {row['layout']} | {row['batch']} | {row['median_tok_s']} | {', '.join(map(str, row['runs']))} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", type=int, nargs="+", default=[4, 8, 16, 24])
    p.add_argument("--context", type=int, default=1100)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="0: every core")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "reports")
    args = p.parse_args(argv)
    report = run(args.batches, args.context, args.repeats, args.threads)
    write_report(args.out, "engine_decode", report, markdown)
    print(markdown(report))


if __name__ == "__main__":
    main()
