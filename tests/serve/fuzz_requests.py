"""Request generators for fuzzing the route (issue 11): valid, nearly valid and hostile bodies for
/v1/completions and /v1/chat/completions, and what every answer must satisfy.

Used by tests/serve/test_route_fuzz.py (a fixed-seed slice in CI) and benchmarks/route_fuzz.py (a
long campaign). A request is a `FuzzRequest`: the raw bytes sent, so hostile bodies can be
anything (not JSON, NaN, nested past any parser, past the byte bound); `kind` says what was meant:

- valid: a completions body the route must answer 200 (short prompts, any Unicode, token ids,
  every sampling field within its bounds, in any combination);
- nearly: a valid body with one thing wrong (a number just past a bound, a wrong JSON type, an
  unknown field, a missing field) - must be a 4xx;
- hostile: sizes, numbers far out of range, deep or huge JSON, bytes that are not JSON - a 4xx;
- chat: chat bodies, valid or not - a 4xx here (the bundled judge is a base model with no chat
  template), never a 5xx.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import List

from hypothesis import strategies as st

from serve import openai as oa

MODEL = "gemma3-270m"
VOCAB = 262_144  # the bundled judge's vocabulary (FACTS.md)
CONTEXT = 2048  # judge_route's context_length
PARALLEL = 4  # judge_route's parallel: n up to this is valid
COMPLETIONS = "/v1/completions"
CHAT = "/v1/chat/completions"


@dataclass
class FuzzRequest:
    kind: str  # valid | nearly | hostile | chat
    path: str
    body: bytes
    what: str  # a short description for reports (never the whole body)

    def __repr__(self) -> str:  # hypothesis prints failing examples: keep them readable
        shown = self.body if len(self.body) <= 300 else self.body[:300] + b"...(%d bytes)" % len(self.body)
        return f"FuzzRequest({self.kind}, {self.path}, {self.what}, {shown!r})"


def _dumps(body) -> bytes:
    # allow_nan: hostile bodies may hold NaN/Infinity tokens, which Python's parser would accept.
    return json.dumps(body, allow_nan=True).encode()


# -- valid completions -----------------------------------------------------------------------------
text = st.text(max_size=40)  # any Unicode (no lone surrogates: those are in the hostile set)
token_ids = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=24)
prompts = st.one_of(text, st.lists(text, min_size=1, max_size=3), token_ids,
                    st.lists(token_ids, min_size=1, max_size=2))
stops = st.one_of(st.none(), st.text(min_size=1, max_size=8), st.lists(st.text(min_size=1, max_size=8), max_size=4))
finite = {"allow_nan": False, "allow_infinity": False}


def valid_completion(max_tokens: int = 4) -> st.SearchStrategy[dict]:
    return st.fixed_dictionaries(
        {"model": st.just(MODEL), "prompt": prompts, "max_tokens": st.integers(1, max_tokens)},
        optional={
            "temperature": st.floats(0.0, 2.0, **finite),
            "top_p": st.floats(0.01, 1.0, **finite),
            "top_k": st.integers(0, 100),
            "n": st.integers(1, PARALLEL),
            "stop": stops,
            "seed": st.integers(*oa.SEED_RANGE),
            "logprobs": st.one_of(st.none(), st.integers(0, oa.MAX_LOGPROBS)),
            "logit_bias": st.dictionaries(st.integers(0, VOCAB - 1).map(str), st.floats(-100, 100, **finite),
                                          max_size=8),
            "structured_outputs": st.fixed_dictionaries(
                {"choice": st.lists(st.text(min_size=1, max_size=6), min_size=1, max_size=5)}),
            "echo": st.just(False),
            "stream": st.just(False),
            "presence_penalty": st.just(0.0),
            "user": st.text(max_size=20),
        },
    )


# -- one thing wrong -----------------------------------------------------------------------------
def _past_bounds() -> List[tuple]:
    """(field, value) pairs at or just past a bound, and of a wrong JSON type."""
    b = oa
    return [
        ("max_tokens", 0), ("max_tokens", CONTEXT), ("max_tokens", b.MAX_TOKENS + 1), ("max_tokens", -1),
        ("max_tokens", 1.0), ("max_tokens", "4"), ("max_tokens", True),
        ("n", 0), ("n", PARALLEL + 1), ("n", b.MAX_N + 1), ("n", 2.5),
        ("temperature", -0.001), ("temperature", 2.001), ("temperature", "0"), ("temperature", 1e308 * 10),
        ("temperature", math.nan), ("top_p", 0.0), ("top_p", 1.0001), ("top_k", -1), ("top_k", b.MAX_TOP_K + 1),
        ("logprobs", b.MAX_LOGPROBS + 1), ("logprobs", -1), ("seed", b.SEED_RANGE[1] + 1),
        ("seed", b.SEED_RANGE[0] - 1), ("seed", 10 ** 4000), ("stop", [""]), ("stop", ["s"] * (b.MAX_STOPS + 1)),
        ("stop", "s" * (b.MAX_STOP_CHARS + 1)), ("stop", [1]), ("stop", {"a": 1}),
        ("logit_bias", {"-1": 1}), ("logit_bias", {"x": 1}), ("logit_bias", {str(VOCAB): 1}),
        ("logit_bias", {"1": "1"}), ("logit_bias", {"1" * 5000: 1}), ("logit_bias", [1, 2]),
        ("logit_bias", {str(i): 1 for i in range(b.MAX_LOGIT_BIAS + 1)}),
        ("structured_outputs", {"choice": []}), ("structured_outputs", {"choice": [""]}),
        ("structured_outputs", {"regex": "[0-9]"}), ("structured_outputs", {"json": {}}),
        ("guided_choice", ["x"] * (b.MAX_CHOICES + 1)), ("prompt", []), ("prompt", [[]]), ("prompt", [[-1]]),
        ("prompt", [[VOCAB]]), ("prompt", [1, "a"]), ("prompt", {"text": "a"}), ("prompt", None),
        ("prompt", ["p"] * (b.MAX_PROMPTS + 1)), ("prompt", [0] * CONTEXT), ("prompt", "x" * (CONTEXT * 40)),
        ("stream", True), ("stream", "false"), ("echo", True), ("best_of", 2), ("suffix", "s"),
        ("presence_penalty", 0.5), ("frequency_penalty", 3), ("stream_options", {"include_usage": True}),
        ("tools", []), ("response_format", {"type": "json_object"}), ("min_p", 0.1), ("model", ""),
        ("model", 7), ("model", "no-such-judge"), ("model", "m" * 10_000), ("user", "u" * 10_000),
    ]


_PAST_BOUNDS = st.sampled_from(_past_bounds())


@st.composite
def nearly_valid(draw, max_tokens: int = 4) -> FuzzRequest:
    body = draw(valid_completion(max_tokens))
    field, value = draw(_PAST_BOUNDS)
    if draw(st.booleans()) and field in body and field not in ("model", "prompt"):
        del body[field]  # also: a required or optional field missing
        field, value = draw(st.sampled_from([("model", None), ("prompt", None)]))
    if value is None:
        body.pop(field, None)
    else:
        body[field] = value
    return FuzzRequest("nearly", COMPLETIONS, _dumps(body), f"{field}={_short(value)}")


# -- hostile: sizes, numbers far out, JSON no parser should follow --------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
_FIELDS = ["model", "prompt", "max_tokens", "temperature", "top_p", "top_k", "n", "stop", "seed", "logprobs",
           "logit_bias", "structured_outputs", "stream", "echo", "messages", "max_completion_tokens"]


@st.composite
def hostile(draw, max_body: int = 6 << 20) -> FuzzRequest:
    shape = draw(st.sampled_from(["any-json", "wrong-types", "deep", "huge-body", "huge-list", "bytes",
                                  "truncated", "surrogate", "nan", "big-int", "many-keys", "long-key"]))
    path = draw(st.sampled_from([COMPLETIONS, CHAT]))
    if shape == "any-json":
        raw = _dumps(draw(json_values))
    elif shape == "wrong-types":
        body = {k: draw(json_values) for k in draw(st.lists(st.sampled_from(_FIELDS), min_size=1, max_size=6))}
        if draw(st.booleans()):
            body["model"] = MODEL
        count = body.get("max_tokens")
        if isinstance(count, int) and not isinstance(count, bool) and count > 4:
            body["max_tokens"] = 4  # a body that happens to be valid must stay quick to answer
        raw = _dumps(body)
    elif shape == "deep":
        # Hypothesis favours the first of a list: the most hostile sizes come first.
        depth = draw(st.sampled_from([500_000, 50_000, 1100, 900, 100]))
        inner = b"[" * depth + b"]" * depth
        raw = b'{"model": "%s", "prompt": "x", "stop": ' % MODEL.encode() + inner + b"}"
    elif shape == "huge-body":
        size = draw(st.integers(oa.MAX_BODY_BYTES - 100, max_body))
        raw = b'{"model": "%s", "prompt": "' % MODEL.encode() + b"x" * size + b'"}'
    elif shape == "huge-list":
        count = draw(st.sampled_from([100_000, 1000, 65]))
        key = draw(st.sampled_from(["prompt", "stop", "messages", "logit_bias-keys", "choices"]))
        body = {"model": MODEL, "prompt": "x", "max_tokens": 1}
        if key == "logit_bias-keys":
            body["logit_bias"] = {str(i): 1 for i in range(count)}
        elif key == "choices":
            body["structured_outputs"] = {"choice": [str(i) for i in range(count)]}
        elif key == "messages":
            body["messages"] = [{"role": "user", "content": "x"}] * count
        else:
            body[key] = ["x"] * count
        raw = _dumps(body)
    elif shape == "bytes":
        raw = draw(st.binary(max_size=200))
    elif shape == "truncated":
        whole = _dumps(draw(valid_completion()))
        raw = whole[: draw(st.integers(0, max(len(whole) - 1, 0)))]
    elif shape == "surrogate":
        raw = b'{"model": "%s", "prompt": "a\\ud800b", "max_tokens": 1}' % MODEL.encode()
    elif shape == "nan":
        raw = b'{"model": "%s", "prompt": "a", "temperature": %s}' % (
            MODEL.encode(), draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999"])))
    elif shape == "big-int":
        digits = draw(st.sampled_from([5000, 4300, 400, 20]))
        field = draw(st.sampled_from(["max_tokens", "n", "seed", "top_k", "logprobs"]))
        raw = b'{"model": "%s", "prompt": "a", "%s": %s}' % (MODEL.encode(), field.encode(), b"9" * digits)
    elif shape == "many-keys":
        raw = _dumps(dict({f"k{i}": i for i in range(draw(st.sampled_from([10_000, 10])))}, model=MODEL, prompt="x"))
    else:  # long-key
        raw = _dumps({"model": MODEL, "prompt": "x", "k" * draw(st.sampled_from([100_000, 100])): 1})
    return FuzzRequest("hostile", path, raw, f"{shape} ({len(raw)} bytes)")


def extremes() -> List[FuzzRequest]:
    """The most hostile of each shape, sent by every campaign whatever hypothesis draws (it favours
    small sizes, and it raises Python's recursion limit while it runs, which hides deep JSON)."""
    m = MODEL.encode()
    raws = {
        "nested 500,000 deep": b'{"model": "%s", "prompt": "x", "stop": ' % m + b"[" * 500_000 + b"]" * 500_000 + b"}",
        "nested 1,100 deep": b'{"model": "%s", "prompt": "x", "stop": ' % m + b"[" * 1100 + b"]" * 1100 + b"}",
        "body one byte past the bound": _sized(b'{"model": "%s", "prompt": "' % m, b'"}', oa.MAX_BODY_BYTES + 1),
        "body at the bound": _sized(b'{"model": "%s", "prompt": "' % m, b'"}', oa.MAX_BODY_BYTES),
        "5,000-digit seed": b'{"model": "%s", "prompt": "a", "seed": %s}' % (m, b"9" * 5000),
        "5,000-digit logit_bias key": b'{"model": "%s", "prompt": "a", "logit_bias": {"%s": 1}}' % (m, b"9" * 5000),
        "lone surrogate": b'{"model": "%s", "prompt": "a\\ud800b"}' % m,
        "lone surrogate in a choice": b'{"model": "%s", "prompt": "a", "structured_outputs": {"choice": ["\\udfff"]}}' % m,
        "NaN temperature": b'{"model": "%s", "prompt": "a", "temperature": NaN}' % m,
        "10,000 unknown keys": _dumps(dict({f"k{i}": i for i in range(10_000)}, model=MODEL, prompt="x")),
        "100,000 logit_bias entries": _dumps({"model": MODEL, "prompt": "x", "logit_bias": {str(i): 1 for i in range(100_000)}}),
        "100,000 prompts": _dumps({"model": MODEL, "prompt": ["x"] * 100_000}),
        "top_k 2**40": _dumps({"model": MODEL, "prompt": "x", "top_k": 1 << 40}),
        "token id past the vocabulary": _dumps({"model": MODEL, "prompt": [[2, VOCAB]]}),
        "logit_bias id past the vocabulary": _dumps({"model": MODEL, "prompt": "x", "logit_bias": {str(VOCAB + 5): 5}}),
        "max_tokens 10**9": _dumps({"model": MODEL, "prompt": "x", "max_tokens": 10 ** 9}),
        "prompt of 1,000,000 characters": _dumps({"model": MODEL, "prompt": "word " * 200_000}),
    }
    return [FuzzRequest("hostile", COMPLETIONS, raw, what) for what, raw in raws.items()]


# -- chat ---------------------------------------------------------------------------------------------
messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant", "developer",
                                                                   "tool", ""]),
                                           "content": st.one_of(text, st.lists(text, max_size=2), st.none())}),
                    max_size=4)


@st.composite
def chat(draw) -> FuzzRequest:
    body = draw(st.fixed_dictionaries({"model": st.just(MODEL), "messages": messages},
                                      optional={"max_tokens": st.integers(-1, 5), "temperature": st.floats(0, 3),
                                                "logprobs": st.booleans(), "top_logprobs": st.integers(0, 25),
                                                "n": st.integers(0, 5), "tools": st.just([])}))
    return FuzzRequest("chat", CHAT, _dumps(body), f"chat ({len(body['messages'])} messages)")


def requests(max_tokens: int = 4, max_body: int = 6 << 20) -> st.SearchStrategy[FuzzRequest]:
    """The mix the campaign draws from."""
    valid = valid_completion(max_tokens).map(lambda b: FuzzRequest("valid", COMPLETIONS, _dumps(b), _describe(b)))
    return st.one_of(valid, nearly_valid(max_tokens), hostile(max_body), chat())


# -- what every answer must satisfy -------------------------------------------------------------------
def problems(request: FuzzRequest, status: int, payload: bytes, elapsed_s: float, time_bound_s: float) -> List[str]:
    """Why an answer breaks the route's contract ([] when it keeps it)."""
    found = []
    if status >= 500:
        found.append(f"{status} (a 5xx)")
    if elapsed_s > time_bound_s:
        found.append(f"took {elapsed_s:.1f} s (bound {time_bound_s:.0f} s)")
    try:
        answer = json.loads(payload)
    except ValueError:
        return found + [f"{status} answer is not JSON: {payload[:100]!r}"]
    if 400 <= status < 500:
        error = answer.get("error") if isinstance(answer, dict) else None
        if not (isinstance(error, dict) and isinstance(error.get("message"), str) and error["message"]
                and isinstance(error.get("type"), str) and {"param", "code"} <= set(error)):
            found.append(f"{status} is not OpenAI-shaped: {payload[:200]!r}")
        elif request.kind == "valid":
            found.append(f"a valid request was refused: {status} {error['message'][:200]}")
    elif status == 200:
        if request.kind == "nearly":  # (a hostile body may happen to be valid)
            found.append("a request meant to be refused was answered 200")
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list) or not answer["choices"]:
            found.append("a 200 without choices")
    elif status < 500:
        found.append(f"unexpected status {status}")
    return found


def _sized(head: bytes, tail: bytes, size: int) -> bytes:
    return head + b"x" * (size - len(head) - len(tail)) + tail


def _short(value) -> str:
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _describe(body: dict) -> str:
    prompt = body["prompt"]
    return f"valid ({', '.join(sorted(k for k in body if k not in ('model', 'prompt')))}; prompt {_short(prompt)})"

