"""The concurrent client of `judgefleet bench`'s peer servers, and the numbers every method reports.

It sends the article's requests - each row's prompt, formatted as the article's method formats it,
`num_samples` samples with the same sampling, max tokens and seeds (the row's seed + i for sample
i) - but keeps `in_flight` requests open at once, as a user of a server with parallel slots would.
Samples go either one request each (as the article sends them) or as one request with `n` (the
server then prefills the prompt once and forks it; llama-server gives child i the seed + i, as the
article's i-th request has). Verdicts are parsed from the text, as for the article.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import httpx

from jobs.judge.row_judge import JudgeSettings, sample_seed
from jobs.judge.verdict import parse_verdict
from serve import wire


@dataclass
class ClientStats:
    answered: int = 0
    scored: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0
    errors: List[str] = field(default_factory=list)
    max_in_flight: int = 0
    elapsed_s: float = 0.0
    choices: List[Tuple[str, Optional[str]]] = field(default_factory=list)  # (text, finish_reason), if kept


def requests_for(rows: Sequence[Tuple[str, str]], settings: JudgeSettings, use_n: bool) -> List[dict]:
    """The request bodies for `rows` ((row_id, prompt)): one per sample, or one per row with `n`."""
    bodies = []
    for row_id, prompt in rows:
        seed = sample_seed(settings.seed, row_id)
        base = {"model": settings.model, "prompt": settings.format_prompt(prompt), "max_tokens": settings.max_tokens,
                "temperature": settings.temperature, "top_p": settings.top_p}
        if use_n:
            bodies.append({**base, "n": settings.num_samples, **({} if seed is None else {"seed": seed})})
        else:
            bodies += [{**base, **({} if seed is None else {"seed": seed + i})} for i in range(settings.num_samples)]
    return bodies


async def run_requests(url: str, bodies: Sequence[dict], in_flight: int, mode: str,
                       timeout_s: float = 600, keep_choices: bool = False) -> ClientStats:
    """POST every body to `url`/completions, `in_flight` at a time, in order; count what came back
    (`keep_choices`: and keep every choice's text, for `recount_completion_tokens`)."""
    stats = ClientStats()
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    open_now = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal open_now
        while True:
            try:
                body = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            open_now += 1
            stats.max_in_flight = max(stats.max_in_flight, open_now)
            try:
                reply = await client.post(url.rstrip("/") + "/completions", json=body)
                stats.requests += 1
                if reply.status_code != 200:
                    stats.errors.append(f"{reply.status_code}: {reply.text[:200]}")
                    continue
                answer = reply.json()
            except (httpx.HTTPError, ValueError) as e:
                stats.errors.append(f"{type(e).__name__}: {e}"[:200])
                continue
            finally:
                open_now -= 1
            for choice in answer.get("choices") or []:
                stats.answered += 1
                if keep_choices:
                    stats.choices.append((choice.get("text") or "", choice.get("finish_reason")))
                stats.scored += parse_verdict(choice.get("text") or "", mode).score is not None
            usage = answer.get("usage") or {}
            stats.prompt_tokens += usage.get("prompt_tokens") or 0
            stats.completion_tokens += usage.get("completion_tokens") or 0

    limits = httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
    async with httpx.AsyncClient(timeout=timeout_s, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(max(1, in_flight))))
        stats.elapsed_s = time.perf_counter() - t0
    return stats


async def recount_completion_tokens(url: str, stats: ClientStats, max_tokens: int) -> None:
    """The completion tokens of every kept choice, for a server whose usage counts one choice of
    `n` (llama-server's does): `max_tokens` for a choice cut at the limit, else its text tokenized
    by the server's /tokenize (run after the timed requests, so it costs them nothing)."""
    base = url.rstrip("/").removesuffix("/v1")
    total = 0
    async with httpx.AsyncClient(timeout=60) as client:
        for text, finish_reason in stats.choices:
            if finish_reason == "length":
                total += max_tokens
                continue
            reply = await client.post(base + wire.TOKENIZE_PATH, json={"content": text, "add_special": False})
            reply.raise_for_status()
            total += len(reply.json()["tokens"])
    stats.completion_tokens = total


def method_result(rows, answered, scored, prompt_tokens, completion_tokens, elapsed, startup, how,
                  memory: Optional[dict] = None) -> dict:
    """One method's numbers, as bench.json and both tables report them."""
    elapsed = max(elapsed, 1e-9)
    return {
        "how": how,
        "rows": rows,
        "samples": answered,
        "samples_scored": scored,
        "parse_rate": round(scored / answered, 4) if answered else None,
        "time_s": round(elapsed, 2),
        "startup_s": round(startup, 2),
        "rows_per_s": round(rows / elapsed, 4),
        "samples_per_s": round(answered / elapsed, 4),
        "scored_samples_per_s": round(scored / elapsed, 4),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_per_s": round(prompt_tokens / elapsed, 1),
        "completion_tokens_per_s": round(completion_tokens / elapsed, 1),
        **(memory or {}),
    }


def client_result(rows: int, stats: ClientStats, startup: float, how: str, memory: Optional[dict] = None) -> dict:
    result = method_result(rows, stats.answered, stats.scored, stats.prompt_tokens, stats.completion_tokens,
                           stats.elapsed_s, startup, how, memory)
    result["requests"] = stats.requests
    result["errors"] = len(stats.errors)
    if stats.errors:
        result["first_error"] = stats.errors[0]
    return result
