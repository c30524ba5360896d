"""Continuous batching over llama.cpp's low-level API, on one thread that owns the context.

Why not `llama_cpp.Llama`: it decodes one sequence at a time, and its logprobs need
`logits_all=True`, which keeps n_ctx x n_vocab floats (4 GB for Gemma's 262k vocabulary).

How it works: the KV cache is split into slots (llama.cpp sequence ids, each its own KV stream):
up to `parallel` of them decode at once, and `cache_slots` more only keep the KV of finished
sequences for reuse. Each iteration builds one llama_batch holding the next token of every
decoding sequence plus a chunk of prompt tokens of sequences still in prefill, decodes it once,
and samples every sequence that got logits. Requests join and leave between iterations, and the
`n` samples of a request start as slots free up, not all at once. A finished slot keeps its KV,
so a new prompt sharing a prefix with it (the same prompt again, or a shared task description)
starts after that prefix; a prefix held by another slot is copied (`llama_memory_seq_cp`). The
`n` samples of one request share one prefill: the prompt is evaluated once and copied.

Why a stream per slot, not one unified KV buffer where seq_cp only adds a sequence id to cells:
attention and its mask then span every cell in use, all slots together, so each token of a
prefill or a decode step paid for the others' context too (16 vicuna rows, 8 slots: prefill
steps 46 s unified, 29 s per slot; engine 0.61 -> 0.67 samples/s at 12 slots). A copy moves a
whole stream (~38 MB for Gemma 3 270M at 2048 tokens: milliseconds), against a prefill of ~2 s.

Why a new sequence takes the lowest free slot: with a stream per slot, llama.cpp puts into one
pass over the weights (a ubatch) only sequences whose ids are consecutive (llama_batch_allocr::
split_equal, "accept only increasing sequence ids"); every gap in the decoding slots' ids costs
another pass. Sequences placed by idle time alone left 3-5 runs per step: a 16-sequence decode
step took 180 ms against 107 ms as one run (16 vicuna rows, tokens replayed). So sequences pack
the low slots, and a cache in the way moves to the slot idle longest - one stream copy; a sequence
above a gap that nothing new fills moves down into it (`_pack`), and the batch is written in slot
order, so that a prefill joins the decoding run instead of splitting it.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Deque, Dict, List, Optional, Union

import numpy as np

from serve.engines.base import GenerationRequest, GenerationResult, Sample, TokenLogprobs

log = logging.getLogger(__name__)

_MASKED = -1e30  # a logit no sampler will pick; finite, so softmax never sees inf - inf
SHORT_ANSWER = 4  # max_tokens up to which a request counts as a short answer (admitted first)


@dataclass
class _ChoiceNode:
    """Trie over the token sequences of the allowed choices."""

    children: Dict[int, "_ChoiceNode"] = field(default_factory=dict)
    terminal: bool = False


@dataclass(eq=False)
class Job:
    request: GenerationRequest
    on_done: Callable[[Union[GenerationResult, BaseException]], None]
    choice_trie: Optional[_ChoiceNode] = None
    seqs: List["_Seq"] = field(default_factory=list)
    cached_tokens: int = 0
    cancelled: bool = False
    finished: bool = False


@dataclass(eq=False)
class _Seq:
    job: Job
    index: int
    slot: int
    sampler: object
    pending: List[int]  # tokens to feed next: the prompt remainder, then each sampled token
    n_past: int  # position of pending[0]
    forks: List["_Seq"] = field(default_factory=list)  # siblings waiting for this prefill
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    finish_reason: Optional[str] = None
    logprobs: Optional[TokenLogprobs] = None
    choice_node: Optional[_ChoiceNode] = None

    @property
    def prefilling(self) -> bool:
        return self.generated == 0 and len(self.pending) > 0

    @property
    def waiting(self) -> bool:
        """A sample waiting for its head's prefill: no KV yet, nothing to feed."""
        return self.generated == 0 and not self.pending


def _common_prefix(a: List[int], b: List[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class BatchScheduler:
    """Owns a llama context; `submit` is thread-safe, everything else runs on the loop thread."""

    def __init__(self, model, ctx, *, parallel: int, context_length: int, batch_tokens: int, max_candidates: int = 0,
                 cache_slots: int = 0):
        import llama_cpp

        self._ll = llama_cpp
        self._model = model
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx.ctx)
        self._vocab = model.vocab
        self.n_vocab = model.n_vocab()
        self.parallel = parallel
        self.overflow = parallel  # extra sequences allowed for short answers (see _run)
        self.slots = parallel + cache_slots
        self.context_length = context_length
        self.batch_tokens = batch_tokens
        self.max_candidates = max_candidates
        self._batch = llama_cpp.llama_batch_init(batch_tokens + parallel + self.overflow, 0, 1)
        self._slot_tokens: List[List[int]] = [[] for _ in range(self.slots)]  # tokens whose KV each slot holds
        self._slot_used = [0] * self.slots  # when each slot last held a sequence (a step count)
        self._owner: List[Optional[_Seq]] = [None] * self.slots
        self._pending: Deque[Job] = deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="llama-decode", daemon=True)
        self._pieces: Dict[int, bytes] = {}
        self.prompt_tokens_evaluated = 0  # prompt tokens actually computed (cache hits excluded)
        self.decode_steps = 0
        # Seconds in llama_decode, and in whole steps (decode + sampling + bookkeeping): with the
        # replica's uptime they say how busy the engine is and what the Python around it costs.
        self.decode_s = 0.0
        self.step_s = 0.0

    # -- called from other threads -------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Job) -> None:
        if job.request.params.choices:
            job.choice_trie = self._choice_trie(job.request.params.choices)
        with self._cv:
            if self._stopping:
                raise RuntimeError("the engine is shutting down")
            self._pending.append(job)
            self._cv.notify()

    def cancel(self, job: Job) -> None:
        with self._cv:
            job.cancelled = True
            self._cv.notify()

    def stats(self) -> Dict[str, float]:
        with self._cv:
            return {
                "waiting_requests": len(self._pending),
                "busy_slots": sum(o is not None for o in self._owner),
                "slots": self.parallel,
                "cache_slots": self.slots - self.parallel,
                "prompt_tokens_evaluated": self.prompt_tokens_evaluated,
                "decode_steps": self.decode_steps,
                "decode_s": round(self.decode_s, 3),
                "step_s": round(self.step_s, 3),
            }

    def stop(self) -> None:
        with self._cv:
            self._stopping = True
            self._cv.notify()
        self._thread.join(timeout=30)
        self._ll.llama_batch_free(self._batch)

    # -- the decode loop ---------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._stopping and not self._pending and not self._active():
                    self._cv.wait()
                if self._stopping:
                    break
                self._drop_cancelled()
                # Short answers (a verdict step: one token after cached feedback) go first, even
                # past `parallel`: they finish within a step or two, and waiting behind new
                # prompts would let the cache they continue be evicted.
                for job in [j for j in self._pending if j.request.params.max_tokens <= SHORT_ANSWER]:
                    if self._try_admit(job, limit=self.parallel + self.overflow):
                        self._pending.remove(job)
                while self._pending and self._try_admit(self._pending[0]):
                    self._pending.popleft()
            if not self._active():
                continue
            started = time.perf_counter()
            try:
                self._step()
            except Exception as e:  # an engine failure fails the requests in flight, not the replica
                log.exception("llama.cpp decode failed")
                for job in {s.job for s in self._active()}:
                    self._fail(job, e)
            self.step_s += time.perf_counter() - started
        for job in list(self._pending) + [s.job for s in self._active()]:
            self._fail(job, RuntimeError("the engine shut down"))

    def _active(self) -> List[_Seq]:
        return [s for s in self._owner if s is not None]

    def _drop_cancelled(self) -> None:
        for job in [j for j in self._pending if j.cancelled]:
            self._pending.remove(job)
        for seq in self._active():
            if seq.job.cancelled:
                self._release(seq)

    def _try_admit(self, job: Job, limit: Optional[int] = None) -> bool:
        """`_admit`, but a job that cannot be set up (its sampler, its prompt) fails alone and
        leaves the queue (True): raised here, it would end the decode loop for every request."""
        try:
            return self._admit(job, limit)
        except Exception as e:  # noqa: BLE001 - the job's own failure, answered as its error
            log.exception("llama.cpp could not admit a request")
            self._fail(job, e)
            return True

    def _admit(self, job: Job, limit: Optional[int] = None) -> bool:
        """Give the job's samples their slots, reusing the longest cached prefix; True once every
        sample has one. Samples start as slots free up: a request of n samples never waits for n
        free slots at once while fewer stand idle (parallel 8 and n = 3 kept 2 slots idle)."""
        if job.cancelled or job.finished:
            return True
        free = [s for s in range(self.slots) if self._owner[s] is None]
        room = min(len(free), (limit or self.parallel) - (self.slots - len(free)))
        want = job.request.n - len(job.seqs)
        if room <= 0:
            return False
        take = min(room, want)
        if not job.seqs:
            self._admit_head(job, free, take)
        else:
            self._admit_more(job, free, take)
        return len(job.seqs) == job.request.n

    def _admit_head(self, job: Job, free: List[int], take: int) -> None:
        """The job's first `take` samples: one prefill, shared with the others once computed."""
        prompt = self._align_to_cache(job.request)
        # The longest cached prefix, wherever it is - a sequence that just finished, for the
        # verdict step that continues it, or a shared task description - is copied into the lane.
        source, reuse = self._longest_prefix(prompt)
        primary = self._claim(free, source, reuse)
        self._place(primary, source, reuse)
        job.cached_tokens = reuse
        head = self._new_seq(job, primary, list(prompt[reuse:]), reuse)
        for _ in range(take - 1):
            self._add_fork(head, self._claim(free, source))

    def _admit_more(self, job: Job, free: List[int], take: int) -> None:
        """Samples of a job already decoding: they join its prefill if it is still running, or
        start from the prompt cached in its first sample's slot (one token computed each)."""
        head = job.seqs[0]
        prompt = job.request.prompt_tokens
        for _ in range(take):
            if head.prefilling and self._owner[head.slot] is head:
                self._add_fork(head, self._claim(free))
                continue
            source, reuse = self._longest_prefix(prompt)
            slot = self._claim(free, source, reuse)
            self._place(slot, source, reuse)
            self._new_seq(job, slot, list(prompt[reuse:]), reuse)

    def _claim(self, free: List[int], source: int = -1, reuse: int = 0) -> int:
        """The lowest free slot, for a new sequence that starts from `reuse` tokens of `source`'s
        cache (why: the module's "Why a new sequence takes the lowest free slot"). What the slot
        caches moves aside first (`_move_aside`), unless the sequence continues it (a verdict step
        after its feedback)."""
        lane = min(free)
        free.remove(lane)
        continued = lane == source and reuse >= len(self._slot_tokens[lane]) - 1
        if not continued:
            self._move_aside(lane, [s for s in free if s != source])
        return lane

    def _move_aside(self, slot: int, spare: List[int]) -> bool:
        """What `slot` caches, into the slot of `spare` idle longest, if that one is older: the
        cache given up is the least recently used either way. False if `slot`'s own cache is the
        one given up (it caches something and no spare slot is older)."""
        cached = self._slot_tokens[slot]
        if not cached:
            return True
        oldest = min(spare, key=lambda s: self._slot_used[s], default=None)
        if oldest is None or self._slot_used[oldest] >= self._slot_used[slot]:
            return False
        self._copy_prefix(slot, oldest, len(cached))
        self._slot_used[oldest] = self._slot_used[slot]
        return True

    def _add_fork(self, head: _Seq, slot: int) -> None:
        """A sample in `slot` that starts from `head`'s prompt once its prefill is computed."""
        self._seq_rm(slot, 0)
        head.forks.append(self._new_seq(head.job, slot, [], 0))

    def _longest_prefix(self, prompt: List[int]) -> tuple:
        """The slot caching the longest prefix of `prompt`, and how much of it to reuse (at least
        one token is left to compute: its logits start the answer)."""
        source = max(range(self.slots), key=lambda s: _common_prefix(self._slot_tokens[s], prompt))
        return source, min(_common_prefix(self._slot_tokens[source], prompt), len(prompt) - 1)

    def _place(self, slot: int, source: int, reuse: int) -> None:
        """Make `slot` hold the first `reuse` tokens that `source` caches."""
        if source == slot:
            self._seq_rm(slot, reuse)
            return
        self._seq_rm(slot, 0)
        if reuse > 0:
            self._copy_prefix(source, slot, reuse)

    def _new_seq(self, job: Job, slot: int, pending: List[int], n_past: int) -> _Seq:
        params = job.request.params
        seq = _Seq(job, len(job.seqs), slot, self._sampler(params, len(job.seqs)), pending, n_past)
        seq.choice_node = job.choice_trie
        if params.logprobs is not None:
            seq.logprobs = TokenLogprobs()
        job.seqs.append(seq)
        self._owner[slot] = seq
        self._slot_used[slot] = self.decode_steps
        return seq

    def _align_to_cache(self, request: GenerationRequest) -> List[int]:
        """The prompt's tokens, continuing a cached sequence exactly where its text does.

        A verdict step sends back "prompt + feedback + [RESULT]" as text, and tokenizing it again
        rarely gives back the tokens the judge generated: the space that ends "###Feedback: "
        merges with the first word of the feedback. Matched by tokens, the cache would hold only
        the prompt and the whole feedback would be computed again. Matched by text, the cached
        tokens are kept as generated and only the new text after them is tokenized.
        """
        tokens, text = request.prompt_tokens, request.prompt_text
        if not text:
            return tokens
        best = max((_common_prefix(cached, tokens) for cached in self._slot_tokens), default=0)
        for cached in self._slot_tokens:
            if len(cached) <= best + 1:
                continue
            cached_text = self._text(cached)
            if cached_text and text.startswith(cached_text):
                rest = text[len(cached_text):]
                candidate = cached + (self._model.tokenize(rest.encode("utf-8"), add_bos=False, special=True) if rest else [])
                if len(candidate) < self.context_length:
                    best, tokens = len(cached), candidate
        request.prompt_tokens = tokens
        return tokens

    def _text(self, tokens: List[int]) -> Optional[str]:
        """The text of cached tokens without BOS; None if it ends inside a UTF-8 character."""
        bos = self._ll.llama_vocab_bos(self._vocab)
        try:
            return b"".join(self._piece(t) for t in tokens if t != bos).decode("utf-8")
        except UnicodeDecodeError:
            return None

    def _step(self) -> None:
        feeding = self._chunks()
        if not feeding:
            return
        self._pack(feeding)
        batch = self._batch
        batch.n_tokens = 0
        outputs: List[tuple] = []  # (batch index, seq)
        # In slot order: llama.cpp gathers a ubatch's sequences by scanning the batch for
        # increasing ids, so a prefill written after the decode tokens would split their run.
        for seq, n in sorted(feeding.items(), key=lambda item: item[0].slot):
            chunk = seq.pending[:n]
            for k, tok in enumerate(chunk):
                j = batch.n_tokens
                batch.token[j] = tok
                batch.pos[j] = seq.n_past + k
                batch.n_seq_id[j] = 1
                batch.seq_id[j][0] = seq.slot
                last = k == n - 1 and n == len(seq.pending)
                batch.logits[j] = last
                if last:
                    outputs.append((j, seq))
                batch.n_tokens += 1
            if seq.prefilling:
                self.prompt_tokens_evaluated += n
            del seq.pending[:n]
            seq.n_past += n
            self._slot_tokens[seq.slot].extend(chunk)
        started = time.perf_counter()
        rc = self._ll.llama_decode(self._ctx.ctx, batch)
        self.decode_s += time.perf_counter() - started
        self.decode_steps += 1
        if rc != 0:
            raise RuntimeError(f"llama_decode returned {rc}")
        for j, seq in outputs:
            for fork in seq.forks:  # the prompt is in the KV now: share it with the siblings
                self._copy_prefix(seq.slot, fork.slot, seq.n_past)
                fork.n_past = seq.n_past
            group = [seq] + seq.forks
            seq.forks = []
            for s in group:
                self._sample(s, j)

    def _chunks(self) -> Dict[_Seq, int]:
        """How many of its pending tokens each sequence feeds this step: one for each decoding
        sequence - first, which keeps their latency flat during prefills - and `batch_tokens` of
        prompt among the sequences still in prefill."""
        feeding: Dict[_Seq, int] = {}
        budget = self.batch_tokens
        for seq in sorted(self._active(), key=lambda s: s.prefilling):
            if not seq.pending or (seq.prefilling and budget <= 0):
                continue
            n = min(len(seq.pending), budget) if seq.prefilling else 1
            if seq.prefilling:
                budget -= n
            feeding[seq] = n
        return feeding

    def _pack(self, feeding: Dict[_Seq, int]) -> None:
        """Move the highest-numbered feeding sequence into the lowest slot below it that feeds
        nothing, until none is left: every gap in the ids costs a pass over the weights (the
        module's "Why a new sequence takes the lowest free slot"). Sequences finishing leave such
        gaps, and new ones do not always come to fill them: at a job's end the last sequences
        decoded in 2-5 runs for a hundred steps (16 vicuna rows), at 160-180 ms a step against 107
        as one run, where a move is one stream copy. Which slots it moves into: `_make_room`."""
        while True:
            top = max(feeding, key=lambda s: s.slot)
            hole = next((s for s in range(top.slot) if self._make_room(s, top)), None)
            if hole is None:
                return
            was, waiting = top.slot, self._owner[hole]
            self._copy_prefix(was, hole, len(self._slot_tokens[was]))
            # What `was` held lives on in `hole`: forget it (metadata only - the copy queued above
            # still reads the KV), so that it is the first place a cache moves aside to.
            self._seq_rm(was, 0)
            self._slot_used[was], self._slot_used[hole] = -1, self.decode_steps
            top.slot, self._owner[hole], self._owner[was] = hole, top, waiting
            if waiting is not None:
                waiting.slot = was

    def _make_room(self, slot: int, top: _Seq) -> bool:
        """Ready `slot` for `top` to move into, if it can be: a sample waiting for its head's
        prefill is there (no KV yet: it takes `top`'s slot), or the slot is free and what it
        caches moves aside, above the feeding run, without giving up a cache more recent than one
        kept - a verdict step may be about to continue it, and computing a prompt again costs more
        than a gap does for a while."""
        owner = self._owner[slot]
        if owner is not None:
            return owner.waiting
        above = [s for s in range(top.slot + 1, self.slots) if self._owner[s] is None]
        return self._move_aside(slot, above)

    def _sample(self, seq: _Seq, j: int) -> None:
        ll = self._ll
        params = seq.job.request.params
        logits = None
        if seq.choice_node is not None or seq.logprobs is not None:
            logits = np.ctypeslib.as_array(ll.llama_get_logits_ith(self._ctx.ctx, j), shape=(self.n_vocab,))
        if seq.choice_node is not None:
            allowed = np.fromiter(seq.choice_node.children.keys(), dtype=np.int64)
            kept = logits[allowed].copy()
            logits[:] = _MASKED
            logits[allowed] = kept
        token = ll.llama_sampler_sample(seq.sampler.sampler, self._ctx.ctx, j)
        if seq.logprobs is not None:
            self._record_logprobs(seq, logits, token, params.logprobs)
        seq.generated += 1
        if ll.llama_vocab_is_eog(self._vocab, token):
            return self._finish(seq, "stop")
        seq.text += self._piece(token)
        if seq.choice_node is not None:
            seq.choice_node = seq.choice_node.children.get(token)
            if seq.choice_node is None or seq.choice_node.terminal:
                return self._finish(seq, "stop")
        if params.stop and self._cut_at_stop(seq, params.stop):
            return self._finish(seq, "stop")
        if seq.generated >= params.max_tokens or seq.n_past + 1 > self.context_length:
            return self._finish(seq, "length")
        seq.pending.append(token)

    def _record_logprobs(self, seq: _Seq, logits: np.ndarray, token: int, k: int) -> None:
        x = logits.astype(np.float64)
        peak = x.max()
        logz = peak + np.log(np.exp(x - peak).sum())
        lp = seq.logprobs
        lp.tokens.append(self._piece(token).decode("utf-8", "replace"))
        lp.token_logprobs.append(float(x[token] - logz))
        top: Dict[str, float] = {}
        if k > 0:
            idx = np.argpartition(-x, min(k, len(x) - 1))[:k]
            for t in idx[np.argsort(-x[idx])]:
                if x[t] <= _MASKED:
                    break
                key = self._piece(int(t)).decode("utf-8", "replace")
                top.setdefault(key, float(x[t] - logz))
        lp.top_logprobs.append(top)

    def _cut_at_stop(self, seq: _Seq, stops: List[str]) -> bool:
        text = seq.text.decode("utf-8", "ignore")
        cut = min((i for i in (text.find(s) for s in stops) if i >= 0), default=-1)
        if cut < 0:
            return False
        seq.text = bytearray(text[:cut].encode("utf-8"))
        return True

    def _finish(self, seq: _Seq, reason: str) -> None:
        seq.finish_reason = reason
        self._release(seq)
        job = seq.job
        if len(job.seqs) == job.request.n and all(s.finish_reason for s in job.seqs) and not job.finished:
            job.finished = True
            samples = [
                Sample(
                    text=s.text.decode("utf-8", "replace").rstrip("\ufffd"),
                    finish_reason=s.finish_reason,
                    completion_tokens=s.generated,
                    logprobs=s.logprobs,
                )
                for s in job.seqs
            ]
            result = GenerationResult(samples, len(job.request.prompt_tokens), job.cached_tokens)
            job.on_done(result)

    def _release(self, seq: _Seq) -> None:
        if self._owner[seq.slot] is seq:
            self._owner[seq.slot] = None
            self._slot_used[seq.slot] = self.decode_steps
        if seq.job.cancelled:
            for fork in seq.forks:
                self._release(fork)

    def _fail(self, job: Job, error: BaseException) -> None:
        for seq in job.seqs:
            if self._owner[seq.slot] is seq:
                self._owner[seq.slot] = None
                self._seq_rm(seq.slot, 0)
                self._slot_tokens[seq.slot] = []
        if not job.finished:
            job.finished = True
            job.on_done(error)

    # -- helpers -------------------------------------------------------------------------
    def _seq_rm(self, slot: int, start: int) -> None:
        self._ll.llama_memory_seq_rm(self._mem, slot, start, -1)
        del self._slot_tokens[slot][start:]

    def _copy_prefix(self, source: int, target: int, n: int) -> None:
        """The first `n` positions of slot `source`'s KV into slot `target`, replacing what
        `target` held.

        Each slot is its own KV stream, so a copy moves the whole stream (llama.cpp copies only
        full streams, in the order asked, at the start of the next llama_decode - so `_claim` can
        move a slot's cache aside and then fill the slot in the same admission); the target then
        forgets what lies past `n`. Like `_seq_rm`, keeps `_slot_tokens` in step with the KV."""
        self._ll.llama_memory_seq_cp(self._mem, source, target, -1, -1)
        self._ll.llama_memory_seq_rm(self._mem, target, n, -1)
        self._slot_tokens[target] = list(self._slot_tokens[source][:n])

    def _piece(self, token: int) -> bytes:
        piece = self._pieces.get(token)
        if piece is None:
            buf = ctypes.create_string_buffer(64)
            n = self._ll.llama_token_to_piece(self._vocab, token, buf, 64, 0, False)
            piece = self._pieces[token] = bytes(buf[: max(n, 0)])
        return piece

    def _sampler(self, params, index: int):
        from llama_cpp._internals import LlamaSampler

        chain = LlamaSampler()
        if params.logit_bias:
            chain.add_logit_bias(self.n_vocab, params.logit_bias)
        if params.temperature <= 0:
            chain.add_greedy()
            return chain
        top_k = params.top_k or self.max_candidates
        if top_k > 0:
            chain.add_top_k(top_k)
        if params.top_p < 1.0:
            chain.add_top_p(params.top_p, 1)
        chain.add_temp(params.temperature)
        seed = self._ll.LLAMA_DEFAULT_SEED if params.seed is None else (params.seed + index) & 0xFFFFFFFF
        chain.add_dist(seed)
        return chain

    def _choice_trie(self, choices: List[str]) -> _ChoiceNode:
        root = _ChoiceNode()
        for choice in choices:
            node = root
            for tok in self._model.tokenize(choice.encode("utf-8"), add_bos=False, special=False):
                node = node.children.setdefault(tok, _ChoiceNode())
            node.terminal = True
        return root
