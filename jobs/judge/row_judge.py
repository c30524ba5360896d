"""Judge one row over the OpenAI API: samples of feedback, then a verdict for each.

completions API (the default): the judge writes its feedback freely and stops at "[RESULT]";
then the score is asked for as one next token constrained to the allowed answers (vLLM's
`structured_outputs.choice`), and its top log-probabilities give a distribution over them. So
every answered sample has a score and a probability-weighted score, and the verdict step costs a
few tokens, not a grammar over the whole answer (4.5x slower on a 262k vocabulary) nor a parse
that can fail. An endpoint that ignores the constraint still returns top log-probabilities; the
distribution is then read from those, and the sampled text is parsed as a last resort.

chat API: one chat answer per sample, the verdict parsed from the text (`parse_verdict`), and
the distribution read from the log-probabilities of the score token where the endpoint gives them.

Every error is a `Failure` with a reason code (`jobs.judge.reasons`); a row never raises.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Dict, List, Optional

from jobs.client.http import ApiError, OpenAIClient
from jobs.judge.modes import Mode, Score, get_mode, job_mode
from jobs.judge.reasons import Failure, Reason
from jobs.judge.verdict import RESULT_MARKER, parse_verdict
from serve import wire

if TYPE_CHECKING:
    from jobs.config import JobConfig

# Tokens kept free after the prompt so the verdict step has room.
VERDICT_ROOM = 8


@dataclass
class JudgeSettings:
    model: str
    mode: str = "absolute"
    api: str = "completions"
    num_samples: int = 3
    max_tokens: int = 256
    temperature: float = 1.0
    top_p: float = 0.9
    seed: Optional[int] = 0
    top_logprobs: int = 20
    strict: bool = False
    system_prompt: str = ""
    prompt_format: str = "{prompt}"
    # The judge's context in tokens, when the endpoint says (vLLM's `max_model_len`).
    max_model_len: Optional[int] = None
    # The endpoint is judgefleet's route: it takes a list of prompts, and a preferred member.
    route: bool = False
    # Relative mode: each pair judged in both orders (`judge.swap`, resolved).
    swap: bool = False

    @classmethod
    def from_config(cls, cfg: "JobConfig", max_model_len: Optional[int] = None, route: bool = False) -> "JudgeSettings":
        """The settings of a job's judge (`max_model_len`, `route`: what the endpoint says of itself)."""
        from jobs.config import swap_of

        j, s = cfg.judge, cfg.sampling
        return cls(
            model=j.model, mode=j.mode, api=j.api, num_samples=s.num_samples, max_tokens=s.max_tokens,
            temperature=s.temperature, top_p=s.top_p, seed=s.seed, top_logprobs=s.top_logprobs, strict=j.strict,
            system_prompt=j.system_prompt if j.system_prompt is not None else get_mode(j.mode).system_prompt,
            prompt_format=j.prompt_format, max_model_len=max_model_len, route=route, swap=swap_of(cfg),
        )

    @property
    def job_mode(self) -> Mode:
        """The mode of the job's rows (prompts per row, columns): `mode` with `swap`."""
        return job_mode(self.mode, self.swap)

    @property
    def choices(self) -> tuple:
        """The answers of one prompt's verdict step."""
        return get_mode(self.mode).judged_as.choices

    def format_prompt(self, prompt: str) -> str:
        """A row's prompt as the completions API gets it (`prompt_format` with the system message)."""
        return self.prompt_format.format(system=self.system_prompt, prompt=prompt)


@dataclass
class SampleVerdict:
    score: Score = None
    expected: Optional[float] = None
    probs: Optional[List[float]] = None
    feedback: Optional[str] = None
    error: Optional[Failure] = None


@dataclass
class RowVerdict:
    samples: List[SampleVerdict] = field(default_factory=list)
    errors: List[Failure] = field(default_factory=list)  # the row's, then each failed sample's
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    lineage: Dict[str, str] = field(default_factory=dict)
    # The samples of a row's further prompts (the swapped order, the rejected response).
    more_samples: List[List[SampleVerdict]] = field(default_factory=list)

    @property
    def orders(self) -> List[List[SampleVerdict]]:
        """Each prompt's samples, in the mode's `orders`."""
        return [self.samples, *self.more_samples]


def sample_seed(seed: Optional[int], row_id: str) -> Optional[int]:
    """A per-row seed: re-running the same row repeats its samples; rows differ from each other."""
    if seed is None:
        return None
    return int(hashlib.sha256(f"{seed}:{row_id}".encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def score_distribution(top_logprobs: Optional[Dict[str, float]], choices: tuple) -> Optional[List[float]]:
    """Probabilities over `choices` from a token's top log-probabilities, renormalised.

    Keys are token texts, so " 4" and "4" both count for 4. None when no choice is among them.
    """
    if not top_logprobs:
        return None
    mass = {c: 0.0 for c in choices}
    for token, logprob in top_logprobs.items():
        key = token.strip()
        if key in mass and logprob is not None:
            mass[key] += math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return None
    return [mass[c] / total for c in choices]


class RowJudge:
    """Judges rows through one client; keeps what it learns about the endpoint between rows."""

    def __init__(self, client: OpenAIClient, settings: JudgeSettings):
        self.client = client
        self.s = settings
        self.mode = get_mode(settings.mode).judged_as  # how each prompt is judged
        self.supports_n = True
        self.supports_tokenize = True
        self._rows_started = itertools.count()

    async def judge(self, prompt: str, row_id: str) -> RowVerdict:
        # Rows that started first get free request slots first (see OpenAIClient): the verdict
        # step of a row then follows its feedback while the judge still has it cached.
        _ROW_ORDER.set(next(self._rows_started))
        return await self._judge_prompt(prompt, row_id)

    async def judge_row(self, prompts: List[str], row_id: str, names: Optional[List[str]] = None) -> RowVerdict:
        """A row of several prompts (both orders of a pair, two responses), sent together: the
        same row priority and at once, so a route that caches prefixes prefills their shared
        start once. One RowVerdict: the first prompt's samples, the others' in `more_samples`,
        every error prefixed with its prompt's name (`names`, e.g. "BA"), tokens summed."""
        if len(prompts) == 1:
            return await self.judge(prompts[0], row_id)
        started = time.perf_counter()
        _ROW_ORDER.set(next(self._rows_started))
        parts = await asyncio.gather(*(self._judge_prompt(p, row_id) for p in prompts))
        names = names or [str(i + 1) for i in range(len(prompts))]
        row = RowVerdict(samples=parts[0].samples, more_samples=[p.samples for p in parts[1:]],
                         lineage=next((p.lineage for p in parts if p.lineage), {}))
        for name, part in zip(names, parts):
            row.errors.extend(e.prefixed(f"{name}: ") for e in part.errors)
            row.prompt_tokens += part.prompt_tokens
            row.completion_tokens += part.completion_tokens
        row.latency_s = time.perf_counter() - started
        return row

    async def _judge_prompt(self, prompt: str, row_id: str) -> RowVerdict:
        started = time.perf_counter()
        row = RowVerdict()
        try:
            if self.s.api == "chat":
                await self._judge_chat(prompt, row_id, row)
            else:
                await self._judge_completions(prompt, row_id, row)
        except ApiError as e:
            row.errors.append(Failure(e.reason, f"judge request failed: {e}"))
        except _RowRefused as e:
            row.errors.append(e.failure)
        row.latency_s = time.perf_counter() - started
        if not row.samples:
            row.samples = [SampleVerdict() for _ in range(self.s.num_samples)]
        row.errors.extend(v.error.prefixed(f"sample {i + 1}: ") for i, v in enumerate(row.samples) if v.error)
        return row

    # -- completions: feedback, then one constrained score token -----------------------
    async def _judge_completions(self, prompt: str, row_id: str, row: RowVerdict) -> None:
        s = self.s
        text = s.format_prompt(prompt)
        max_tokens = await self._room(text, s.max_tokens)
        body = {
            "model": s.model,
            "prompt": text,
            "max_tokens": max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
            "stop": [RESULT_MARKER],
        }
        choices = await self._samples("completions", body, sample_seed(s.seed, row_id), row)
        leads = [_lead(c.get("text") or "", c.get("finish_reason")) for c in choices]
        body = {
            "model": s.model,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": s.top_logprobs or 1,
            "structured_outputs": {"choice": list(s.choices)},
        }
        if s.route:
            # judgefleet's route takes a list of prompts: one request carries every sample's verdict
            # step, and goes to the pool member that holds their feedback in its cache.
            member = row.lineage.get("member")
            try:
                answer, _ = await self._post("completions", dict(body, prompt=[text + lead for lead in leads]),
                                             headers=wire.prefer_member(member) if member else None)
            except ApiError as e:
                row.samples = [self._unscored(lead, e) for lead in leads]
                return
            self._count(answer, row)
            answers = list(answer.get("choices") or [])
            row.samples = [self._verdict(lead, answers[i] if i < len(answers) else {}) for i, lead in enumerate(leads)]
            return
        row.samples = list(await asyncio.gather(*(self._score_one(dict(body, prompt=text + lead), lead, row) for lead in leads)))

    async def _score_one(self, body: dict, lead: str, row: RowVerdict) -> SampleVerdict:
        try:
            answer, _ = await self._post("completions", body)
        except ApiError as e:
            return self._unscored(lead, e)
        self._count(answer, row)
        return self._verdict(lead, (answer.get("choices") or [{}])[0])

    def _verdict(self, lead: str, choice: dict) -> SampleVerdict:
        """A sample's verdict from its score token and that token's top log-probabilities."""
        mode = self.mode
        token = (choice.get("text") or "").strip()
        top = ((choice.get("logprobs") or {}).get("top_logprobs") or [None])[0]
        probs = score_distribution(top, mode.choices)
        verdict = parse_verdict(lead + token, mode.name, strict=False)
        if token in mode.choices:
            score = mode.score_of(token)
        elif probs is not None:  # the endpoint ignored the constraint: take the likeliest allowed answer
            score = mode.score_of(mode.choices[max(range(len(probs)), key=probs.__getitem__)])
        else:
            score = verdict.score
        if score is None:
            return SampleVerdict(feedback=verdict.feedback,
                                 error=Failure(Reason.UNPARSED_VERDICT, f"no score in the judge's answer {token!r}"))
        return SampleVerdict(score, mode.expected(probs), probs, verdict.feedback)

    def _unscored(self, lead: str, e: ApiError) -> SampleVerdict:
        """A sample whose verdict step failed: its feedback, and why it has no score."""
        return SampleVerdict(feedback=parse_verdict(lead, self.mode.name).feedback,
                             error=Failure(e.reason, f"score request failed: {e}"))

    # -- chat: one answer per sample, verdict parsed from text ---------------------------
    async def _judge_chat(self, prompt: str, row_id: str, row: RowVerdict) -> None:
        s = self.s
        body = {
            "model": s.model,
            "messages": [{"role": "system", "content": s.system_prompt}, {"role": "user", "content": prompt}],
            "max_tokens": s.max_tokens,
            "temperature": s.temperature,
            "top_p": s.top_p,
        }
        if s.top_logprobs:
            body.update(logprobs=True, top_logprobs=s.top_logprobs)
        choices = await self._samples("chat/completions", body, sample_seed(s.seed, row_id), row)
        row.samples = [self._chat_verdict(c) for c in choices]

    def _chat_verdict(self, choice: dict) -> SampleVerdict:
        content = (choice.get("message") or {}).get("content") or ""
        verdict = parse_verdict(content, self.mode.name, strict=self.s.strict)
        if verdict.score is None:
            return SampleVerdict(feedback=verdict.feedback or None,
                                 error=Failure(Reason.UNPARSED_VERDICT, f"unparsed verdict: {verdict.reason}"))
        probs = _chat_score_probs(choice, content, self.mode.choices)
        return SampleVerdict(verdict.score, self.mode.expected(probs), probs, verdict.feedback)

    # -- shared ----------------------------------------------------------------------------
    async def _samples(self, path: str, body: dict, seed: Optional[int], row: RowVerdict) -> List[dict]:
        """`num_samples` choices: one request with `n`, or one request each where `n` is ignored."""
        n = self.s.num_samples
        choices: List[dict] = []
        if self.supports_n or n == 1:
            answer, _ = await self._post(path, dict(body, n=n, **_seed(seed)))
            self._count(answer, row, lineage=True)
            choices = list(answer.get("choices") or [])[:n]
            if len(choices) < n and n > 1:
                self.supports_n = False  # e.g. llama-cpp-python's server answers one choice
        rest = range(len(choices), n)
        if rest:
            answers = await asyncio.gather(
                *(self._post(path, dict(body, n=1, **_seed(None if seed is None else seed + i))) for i in rest)
            )
            for answer, _ in answers:
                self._count(answer, row, lineage=not row.lineage)
                choices.extend((answer.get("choices") or [])[:1])
        return choices

    async def _room(self, text: str, max_tokens: int) -> int:
        """max_tokens that fit the judge's context; refuse a prompt that leaves no room."""
        limit = self.s.max_model_len
        # A token is at least one byte, so a short prompt fits without asking.
        if not limit or len(text.encode("utf-8")) + 2 + max_tokens + VERDICT_ROOM <= limit:
            return max_tokens
        if not self.supports_tokenize:
            return max_tokens
        try:
            answer, _ = await self._post(wire.TOKENIZE_PATH, {"model": self.s.model, "prompt": text})
            count = int(answer["count"])
        except (ApiError, KeyError, TypeError, ValueError):
            self.supports_tokenize = False
            return max_tokens
        room = limit - count - VERDICT_ROOM
        if room < 1:
            raise _RowRefused(Failure(
                Reason.PROMPT_TOO_LONG,
                f"prompt too long: {count} tokens, and the judge's context is {limit} tokens "
                f"(with {VERDICT_ROOM} kept for the verdict); shorten the prompt or use a judge with a longer context",
            ))
        return min(max_tokens, room)

    async def _post(self, path: str, body: dict, headers: Optional[dict] = None):
        return await self.client.post(path, body, priority=_ROW_ORDER.get(), headers=headers)

    @staticmethod
    def _count(answer: dict, row: RowVerdict, lineage: bool = False) -> None:
        usage = answer.get("usage") or {}
        row.prompt_tokens += int(usage.get("prompt_tokens") or 0)
        row.completion_tokens += int(usage.get("completion_tokens") or 0)
        if lineage:
            # judgefleet's route names who answered; any other OpenAI server is just that.
            named = wire.lineage_of(answer)
            row.lineage = (
                {k: v for k, v in asdict(named).items() if v is not None}
                if named is not None
                else {"backend": "openai-compatible"}
            )


_ROW_ORDER: contextvars.ContextVar = contextvars.ContextVar("row_order", default=0)


class _RowRefused(Exception):
    """The row is not sent (e.g. its prompt cannot fit); `failure` is its error."""

    def __init__(self, failure: Failure):
        super().__init__(failure.message)
        self.failure = failure


def _seed(seed: Optional[int]) -> dict:
    return {} if seed is None else {"seed": seed}


def _lead(feedback: str, finish_reason: Optional[str]) -> str:
    """The feedback and the verdict marker the score token follows. A feedback cut off by
    max_tokens gets the marker on a fresh word, so the verdict still follows it."""
    glue = "" if finish_reason == "stop" or feedback.endswith((" ", "\n")) else " "
    return feedback + glue + RESULT_MARKER + " "


def _chat_score_probs(choice: dict, content: str, choices: tuple) -> Optional[List[float]]:
    """The distribution at the score token: the last allowed answer token after the final marker."""
    tokens = ((choice.get("logprobs") or {}).get("content")) or []
    if not tokens:
        return None
    marker_at = content.upper().rfind(RESULT_MARKER)
    offset, best = 0, None
    for tok in tokens:
        text = tok.get("token") or ""
        if text.strip() in choices and offset >= marker_at >= 0:
            best = tok
        offset += len(text)
    if best is None:
        return None
    top = {t.get("token", ""): t.get("logprob") for t in best.get("top_logprobs") or []}
    top.setdefault(best.get("token", ""), best.get("logprob"))
    return score_distribution(top, choices)
