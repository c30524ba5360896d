"""The endpoint owner: checks before Ray, deploy + readiness, and teardown of what it started."""

from __future__ import annotations

import signal
import socket

import httpx
import pytest

from serve.config import ModelConfig, ServeConfig
from serve.endpoint import EndpointError, JudgeEndpoint
from tests.conftest import free_port
from tests.stub_openai import StubBehaviour, StubOpenAIServer


def test_external_url_checked_before_ray(stub):
    owner = JudgeEndpoint(ServeConfig(), "stub-judge", url=stub.url + "/")
    owner.check()
    endpoint = owner._external
    assert endpoint.url == stub.url and endpoint.model == "stub-judge" and not endpoint.deployed
    assert endpoint.max_model_len == 4096
    assert endpoint.route is False  # a plain OpenAI server: no lineage in its card


@pytest.mark.parametrize("url, model, words", [
    ("http://127.0.0.1:{dead}/v1", "stub-judge", ["judge.url", "cannot reach"]),
    ("{stub}", "other-judge", ["judge.model", "'other-judge' is not served", "stub-judge"]),
])
def test_external_url_problems_name_the_setting(stub, url, model, words):
    owner = JudgeEndpoint(ServeConfig(), model, url=url.format(dead=free_port(), stub=stub.url))
    with pytest.raises(EndpointError) as e:
        owner.check(timeout_s=2)
    for word in words:
        assert word in str(e.value)


def test_busy_port_refused_before_ray():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(EndpointError, match=f"serve.port: 127.0.0.1:{port} is already in use"):
            JudgeEndpoint(ServeConfig(port=port), "gemma3-270m").check()


@pytest.mark.integration
def test_deploys_waits_and_tears_down_only_what_it_started(ray_session):
    from ray import serve

    with StubOpenAIServer(StubBehaviour(model="upstream-name")) as upstream:
        member = ModelConfig(id="owned-judge", name="stub", engine="openai", model=upstream.url,
                             context_length=1234, engine_kwargs={"model": "upstream-name"})
        cfg = ServeConfig(port=free_port(), front="direct", models=[member])
        def before(signum, frame):  # whatever handler was there before the owner
            pass

        previous = signal.signal(signal.SIGTERM, before)
        owner = JudgeEndpoint(cfg, "owned-judge", app_name="owned")
        try:
            with owner as endpoint:
                assert endpoint.deployed and endpoint.route and endpoint.max_model_len == 1234
                with pytest.raises(KeyboardInterrupt):  # SIGTERM unwinds like Ctrl-C while it runs
                    signal.raise_signal(signal.SIGTERM)
                answer = httpx.post(endpoint.url + "/completions", json={"model": "owned-judge", "prompt": "hi"},
                                    timeout=30)
                assert answer.status_code == 200 and answer.json()["model"] == "owned-judge"
                assert "owned" in serve.status().applications
            assert signal.getsignal(signal.SIGTERM) is before
        finally:
            signal.signal(signal.SIGTERM, previous)
        assert "owned" not in serve.status().applications
        assert ray_session.ray.is_initialized()  # a Ray it joined is left running


@pytest.mark.integration
def test_an_error_inside_the_block_still_tears_down(ray_session):
    from ray import serve

    with StubOpenAIServer() as upstream:
        member = ModelConfig(id="failing-judge", name="stub", engine="openai", model=upstream.url)
        cfg = ServeConfig(port=free_port(), front="direct", models=[member])
        with pytest.raises(KeyboardInterrupt):
            with JudgeEndpoint(cfg, "failing-judge", app_name="failing"):
                raise KeyboardInterrupt  # Ctrl-C, or SIGTERM through the owner's handler
        assert "failing" not in serve.status().applications
