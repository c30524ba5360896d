"""A stand-in fleet member for `benchmarks.fleet`: an OpenAI server with an engine's capacity and speed.

    python -m benchmarks.fleet_member --profile gpu|cpu [--time-scale 1.0] [--seed 0]

It is tests/stub_openai.py's server (the same /v1/completions answers: feedback, then the score
step with log-probabilities), with what a real engine adds in front of every completion:

- **capacity**: it works on `slots` requests at once; a request beyond that waits in its queue,
  first come first served, as one does in vLLM's scheduler or in llama.cpp's server slots;
- **latency from tokens**: a request takes `new prompt tokens / prefill_tok_s` plus
  `generated tokens / decode_tok_s`, the rates one request gets while the member is full (its n
  samples decoded together); a feedback sample writes 60-100% of `max_tokens`, a score step one
  token per prompt;
- **a prefix cache**: prompts are cached in blocks of 16 tokens (vLLM's automatic prefix caching;
  llama.cpp's slot cache, more loosely), the feedback it wrote included, so a score step that
  reaches the member holding its feedback prefills a few tokens, and one that reaches another
  member prefills the whole prompt again.

Every change of its running/queued counts and every finished request is logged with
`time.monotonic()` (one clock for all processes of a machine). As a process it prints
{"url": ...} and then answers commands on stdin, one JSON line each: `state` (running, queued,
finished) and `log` (the whole log); the benchmark reads the log of a member before it kills it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import hashlib
import json
import random
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from typing import List, Optional

from tests.stub_openai import StubBehaviour, StubOpenAIServer

CHARS_PER_TOKEN = 4  # as the stub counts usage
BLOCK_TOKENS = 16


@dataclass(frozen=True)
class Profile:
    """How fast and how wide one member is (rates per request, while the member is full)."""

    kind: str
    slots: int  # requests worked on at once
    prefill_tok_s: float  # prompt tokens/s one request gets
    decode_tok_s: float  # generated tokens/s one request gets, its samples together
    cache_tokens: int  # prefix cache size
    describe: str = ""
    time_scale: float = 1.0  # < 1 runs the same model faster (tests)

    def seconds(self, new_prompt_tokens: int, generated_tokens: int) -> float:
        return self.time_scale * (new_prompt_tokens / self.prefill_tok_s + generated_tokens / self.decode_tok_s)

    def row_seconds(self, prompt_tokens: int, samples: int, max_tokens: int) -> float:
        """A row's service time at this member (feedback, then its score step hitting the cache),
        with the mean feedback length: what its capacity in rows/s follows from."""
        feedback = self.seconds(prompt_tokens, round(samples * 0.8 * max_tokens))
        return feedback + self.seconds(samples * 4, samples)

    def rows_per_s(self, prompt_tokens: int, samples: int, max_tokens: int) -> float:
        return self.slots / self.row_seconds(prompt_tokens, samples, max_tokens)


# Two kinds of member serving the same judge. Their ratio is chosen so that the CPU members
# carry a visible share of a mixed pool (~13%): with a real 7B judge a GPU replica outruns a CPU
# node by 100x or more, and a share of 1% would hide any routing loss inside the 0.9 goal.
PROFILES = {
    "gpu": Profile(
        "gpu-vllm-like", slots=32, prefill_tok_s=8000, decode_tok_s=200, cache_tokens=200_000,
        describe="32 requests at once (96 sequences at 3 samples); per request 8,000 prompt tok/s and 200 "
                 "generated tok/s for its samples together (~67 tok/s a sequence, ~6,400 tok/s the replica)"),
    "cpu": Profile(
        "cpu-llamacpp-like", slots=4, prefill_tok_s=300, decode_tok_s=100, cache_tokens=16_000,
        describe="4 requests at once (12 sequences); per request 300 prompt tok/s and 100 generated tok/s "
                 "for its samples together (~400 tok/s the node)"),
}


class PrefixCache:
    """Which leading blocks of a prompt are cached (chained block hashes, least recently used out)."""

    def __init__(self, tokens: int):
        self.capacity = max(1, tokens // BLOCK_TOKENS)
        self._blocks: "collections.OrderedDict[bytes, None]" = collections.OrderedDict()

    def prefill(self, text: str) -> int:
        """Tokens of `text` that must be computed; its blocks are cached afterwards."""
        width = BLOCK_TOKENS * CHARS_PER_TOKEN
        hashes, h = [], b""
        for start in range(0, len(text) - width + 1, width):
            h = hashlib.blake2b(h + text[start:start + width].encode(), digest_size=12).digest()
            hashes.append(h)
        hit = 0
        while hit < len(hashes) and hashes[hit] in self._blocks:
            hit += 1
        self.add(hashes)
        return max(1, (len(text) - hit * width) // CHARS_PER_TOKEN)

    def remember(self, text: str) -> None:
        self.prefill(text)

    def add(self, hashes: List[bytes]) -> None:
        for h in hashes:
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)


class FleetMember(StubOpenAIServer):
    """The stub server with a member's capacity, speed and prefix cache, and a log of its load."""

    def __init__(self, profile: Profile, seed: int = 0, model: str = "fleet-judge"):
        super().__init__(StubBehaviour(model=model), keep_bodies=False)
        self.profile = profile
        self.cache = PrefixCache(profile.cache_tokens)
        self.running = self.queued = 0
        self.events: List[tuple] = []  # (t, running, queued) after each change
        self.finished: List[dict] = []  # one per answered completion
        self._rng = random.Random(seed)
        self._slots: Optional[asyncio.Semaphore] = None  # made on the server's loop
        self._log_lock = threading.Lock()

    def _change(self, running: int = 0, queued: int = 0) -> None:
        with self._log_lock:
            self.running += running
            self.queued += queued
            self.events.append((time.monotonic(), self.running, self.queued))

    def _cost(self, body: dict) -> tuple:
        """(seconds, kind, new prompt tokens, generated tokens) of one completion request."""
        prompts = body.get("prompt") if isinstance(body.get("prompt"), list) else [str(body.get("prompt") or "")]
        new = sum(self.cache.prefill(p) for p in prompts)
        n, max_tokens = int(body.get("n") or 1), int(body.get("max_tokens") or 16)
        if max_tokens == 1:  # the score step: one token per prompt
            kind, generated = "score", n * len(prompts)
        else:
            kind = "feedback"
            generated = sum(round(max_tokens * self._rng.uniform(0.6, 1.0)) for _ in range(n * len(prompts)))
            for p in prompts:  # what it wrote is cached too (the stub writes the same feedback each time)
                self.cache.remember(p + f"Feedback: {self.behaviour.feedback} ")
        return self.profile.seconds(new, generated), kind, new, generated

    async def _completions(self, request):
        try:
            body = await request.json()  # aiohttp keeps the body: the stub's handler reads it again
        except ValueError:
            return await super()._completions(request)
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.profile.slots)
        arrived = time.monotonic()
        self._change(queued=+1)
        try:
            await self._slots.acquire()
        except BaseException:
            self._change(queued=-1)
            raise
        self._change(queued=-1, running=+1)
        try:
            started = time.monotonic()
            seconds, kind, new, generated = self._cost(body)
            await asyncio.sleep(seconds)
        finally:
            self._slots.release()
            self._change(running=-1)
        with self._log_lock:
            self.finished.append({"kind": kind, "arrived": arrived, "started": started, "ended": time.monotonic(),
                                  "prompt_tokens": new, "generated": generated})
        return await super()._completions(request)

    def state(self) -> dict:
        with self._log_lock:
            return {"running": self.running, "queued": self.queued, "finished": len(self.finished),
                    "rows": sum(1 for f in self.finished if f["kind"] == "score")}

    def log(self) -> dict:
        with self._log_lock:
            return {"profile": asdict(self.profile), "url": self.url, "events": list(self.events),
                    "finished": list(self.finished)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(PROFILES), required=True)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    member = FleetMember(replace(PROFILES[args.profile], time_scale=args.time_scale), args.seed).start()
    print(json.dumps({"url": member.url}), flush=True)
    for line in sys.stdin:  # the benchmark's commands; end of input ends the member
        command = line.strip()
        answer = member.state() if command == "state" else member.log() if command == "log" else {"error": command}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    member.stop()


if __name__ == "__main__":
    main()
