"""Settings that every row would fail with are refused with the config, before Ray starts: values
the route refuses, a prompt layout with an unknown field, more samples than a replica decodes at
once, an answer that leaves no room for a prompt in the judge's context."""

import pytest

from jobs.commands.common import JobEndpoint
from jobs.config import load_config
from jobs.errors import ConfigError
from serve.config import OPENAI_LIMITS, route_limits
from serve.endpoint import Endpoint
from tests.conftest import QUICKSTART


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        # The route returns at most 20 top log-probabilities (and refuses the request otherwise).
        (["sampling.top_logprobs=25"], "sampling.top_logprobs", "sampling.top_logprobs=20 or less"),
        # Every completions prompt goes through str.format: an unknown field is a KeyError per row.
        (["judge.prompt_format=[INST] {sytem} {prompt} [/INST]"], "judge.prompt_format", "unknown field {sytem}"),
        (["judge.prompt_format={0} {prompt}"], "judge.prompt_format", "unknown field {0}"),
        (["judge.prompt_format=x {prompt.upper}"], "judge.prompt_format", "unknown field {prompt.upper}"),
        (["judge.prompt_format=[INST] {prompt"], "judge.prompt_format", "literal braces"),
        (["judge.prompt_format=[INST] prompt"], "judge.prompt_format", "must contain {prompt}"),
        # The quickstart's replica decodes 8 sequences at once and refuses n=9.
        (["sampling.num_samples=9"], "sampling.num_samples", "serve.models.0.parallel"),
        # The route takes at most 16 samples a request, whatever the engine.
        (["serve.models.0.parallel=32", "sampling.num_samples=17"], "sampling.num_samples", "16 or less"),
        (["sampling.temperature=2.5"], "sampling.temperature", "at most 2"),
        # The bundled judge is a base model: no chat template, every chat request is refused.
        (["judge.api=chat"], "judge.api", "judge.api=completions"),
        # The quickstart's context is 2048 tokens: an answer of 2048 leaves no room for a prompt.
        (["sampling.max_tokens=2048"], "sampling.max_tokens", "serve.models.0.context_length"),
        (["sampling.max_tokens=5000000", "serve.models.0.context_length=8000000"], "sampling.max_tokens",
         "lower sampling.max_tokens"),
    ],
)
def test_settings_every_row_would_fail_with_are_refused(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    message = str(err.value)
    assert message.startswith(key + ":") and words in message and "\n" not in message


def test_the_smallest_member_of_the_pool_bounds_the_request():
    """The ingress may send a request to any member of the pool: the tightest one decides."""
    members = ("serve.models=[{id: j, parallel: 8, context_length: 4096}, {id: j, name: small, parallel: 2, "
               "context_length: 1024}, {id: other, parallel: 1, context_length: 64}]")
    with pytest.raises(ConfigError, match=r"sampling.num_samples: .*serve.models.1.parallel"):
        load_config(QUICKSTART, [members, "judge.model=j", "sampling.num_samples=3"])
    with pytest.raises(ConfigError, match=r"sampling.max_tokens: .*serve.models.1.context_length"):
        load_config(QUICKSTART, [members, "judge.model=j", "sampling.num_samples=2", "sampling.max_tokens=1024"])
    # The other model's members do not bound this judge.
    load_config(QUICKSTART, [members, "judge.model=j", "sampling.num_samples=2", "sampling.max_tokens=1000"])


def test_what_the_route_accepts_still_loads():
    cfg = load_config(QUICKSTART, ["sampling.num_samples=8", "sampling.max_tokens=2047", "sampling.top_logprobs=20",
                                   "judge.prompt_format=<s>{system}\n\n{prompt} {{json}}"])
    assert cfg.sampling.num_samples == 8
    # An external judge: its own context is not known until it answers; n is not bounded by OpenAI.
    cfg = load_config(QUICKSTART, ["judge.url=http://127.0.0.1:9/v1", "sampling.num_samples=40",
                                   "sampling.max_tokens=100000"])
    assert cfg.sampling.num_samples == 40


def test_an_external_endpoint_is_held_to_the_limits_it_states(monkeypatch):
    """At the endpoint check, before Ray: the context its card states, the route's bounds if it is one."""
    cfg = load_config(QUICKSTART, ["judge.url=http://user:pw@127.0.0.1:9/v1", "judge.model=m",
                                   "sampling.max_tokens=4096", "sampling.num_samples=20"])
    owner = JobEndpoint(cfg, cfg.judge.url)
    states = {"context": 4096, "route": False}
    monkeypatch.setattr(JobEndpoint, "_check_external",
                        lambda self, timeout_s: Endpoint(self.url, "m", None, states["context"], states["route"], False))
    with pytest.raises(ConfigError) as err:
        owner.check()
    assert str(err.value).startswith("sampling.max_tokens: 4096 tokens of answer leave no room")
    assert "4096 tokens (as http://<redacted>@127.0.0.1:9/v1/models states)" in str(err.value)
    states.update(context=8192, route=True)  # judgefleet's route, deployed elsewhere: 16 samples a request
    with pytest.raises(ConfigError, match="sampling.num_samples: 20 is more than the 16 samples judgefleet's route"):
        owner.check()
    states.update(route=False)  # any other server: its context fits, n is its business
    assert owner.check().max_model_len == 8192


def test_the_limits_are_the_routes_own(monkeypatch):
    """route_limits() says what the route's request validation (serve/openai.py) enforces: one past
    each bound is refused, the bound itself is not."""
    from serve import openai as oa
    from serve.errors import OpenAIError

    limits = route_limits()

    def refused(**fields) -> bool:
        try:
            request = oa.parse(oa.CompletionRequest, {"model": "m", "prompt": "hi", **fields})
            request.check_fits(0)
            return False
        except OpenAIError:
            return True

    assert not refused(n=limits.n) and refused(n=limits.n + 1)
    assert not refused(logprobs=limits.logprobs) and refused(logprobs=limits.logprobs + 1)
    assert not refused(max_tokens=limits.max_tokens) and refused(max_tokens=limits.max_tokens + 1)
    assert OPENAI_LIMITS.logprobs == limits.logprobs == 20
