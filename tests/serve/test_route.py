"""The deployed route (real Ray Serve, real llama.cpp, real HTTP) through the official openai client."""

import httpx
import openai
import pytest

from serve import wire

pytestmark = pytest.mark.integration

SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


@pytest.fixture(scope="module")
def client(judge_route):
    url, _ = judge_route
    return openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=120)


def test_models_lists_the_judge_with_its_context(client):
    models = client.models.list().data
    assert [m.id for m in models] == ["gemma3-270m"]
    extra = models[0].model_extra
    assert extra["max_model_len"] == 2048
    assert extra["judgefleet"]["model_sha256"] == SHA256 and extra["judgefleet"]["backend"] == "llama.cpp"


def test_completion_with_usage_logprobs_and_lineage(client, judge_route):
    result = client.completions.create(model="gemma3-270m", prompt="The capital of France is", max_tokens=8,
                                       temperature=0, logprobs=3)
    choice = result.choices[0]
    assert choice.text.startswith(" the capital of")
    assert len(choice.logprobs.tokens) == 8 and len(choice.logprobs.top_logprobs[0]) == 3
    assert result.usage.prompt_tokens == 6 and result.usage.completion_tokens == 8
    lineage = result.model_extra["judgefleet"]
    assert lineage["backend"] == "llama.cpp" and lineage["model_file"] == "gemma-3-270m-q4_k_m.gguf"
    assert lineage["model_sha256"] == SHA256 and lineage["replica"] and lineage["node"]
    raw = httpx.post(judge_route[0] + "/completions", json={"model": "gemma3-270m", "prompt": "Hi", "max_tokens": 1})
    assert raw.headers["x-judgefleet-backend"] == "llama.cpp"
    assert raw.headers["x-judgefleet-model-sha256"] == SHA256 and raw.headers["x-judgefleet-replica"]


def test_structured_choice_and_n_samples(client):
    result = client.completions.create(model="gemma3-270m", prompt="Feedback: Good. [RESULT] ", max_tokens=1,
                                       temperature=0, logprobs=5, n=3,
                                       extra_body={"structured_outputs": {"choice": ["1", "2", "3", "4", "5"]}})
    assert len(result.choices) == 3
    for choice in result.choices:
        assert choice.text in {"1", "2", "3", "4", "5"}
        assert set(choice.logprobs.top_logprobs[0]) <= {"1", "2", "3", "4", "5"}


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"model": "no-such-judge", "prompt": "x"}, 404, "not served here"),
        ({"prompt": "x"}, 400, "model: required"),
        ({"model": "gemma3-270m"}, 400, "prompt"),
        ({"model": "gemma3-270m", "prompt": "x", "max_tokens": -3}, 400, "max_tokens"),
        ({"model": "gemma3-270m", "prompt": "x", "max_tokens": "lots"}, 400, "max_tokens"),
        ({"model": "gemma3-270m", "prompt": "x", "temperature": 9}, 400, "temperature"),
        ({"model": "gemma3-270m", "prompt": "x", "stream": True}, 400, "stream"),
        ({"model": "gemma3-270m", "prompt": "word " * 2100}, 400, "context is 2048 tokens"),
        ({"model": "gemma3-270m", "prompt": "x", "n": 9}, 400, "parallel"),
    ],
)
def test_bad_requests_get_openai_shaped_4xx(judge_route, body, status, words):
    response = httpx.post(judge_route[0] + "/completions", json=body, timeout=60)
    assert response.status_code == status
    error = response.json()["error"]
    assert words in error["message"] and error["type"]


def test_not_json_and_chat_on_a_base_model(judge_route, client):
    response = httpx.post(judge_route[0] + "/completions", content=b"{oops", headers={"content-type": "application/json"})
    assert response.status_code == 400 and "not valid JSON" in response.json()["error"]["message"]
    with pytest.raises(openai.BadRequestError, match="no chat template"):
        client.chat.completions.create(model="gemma3-270m", messages=[{"role": "user", "content": "hi"}])
    # The replica survived all of the above.
    assert client.completions.create(model="gemma3-270m", prompt="ok", max_tokens=1).choices


def test_health_and_tokenize(judge_route):
    root = judge_route[0][: -len("/v1")]
    assert httpx.get(root + "/health").json()["status"] == "ok"
    tokens = httpx.post(root + "/tokenize", json={"model": "gemma3-270m", "prompt": "hello world"}).json()
    assert tokens["count"] == 3 and tokens["tokens"][0] == 2 and tokens["max_model_len"] == 2048


def test_pools_name_each_members_engine_and_its_statistics(judge_route):
    root = judge_route[0][: -len("/v1")]
    for _ in range(5):  # statistics are left out while a replica is too busy to answer them
        pools = wire.parse_pools(httpx.get(root + wire.POOLS_PATH, timeout=30).json())
        (member,) = pools["gemma3-270m"]
        if member.engine_stats is not None:
            break
    assert member.engine == "llama.cpp" and member.up and wire.every_pool_up(pools)
    assert member.engine_stats["slots"] == 4 and member.engine_stats["replica"]
    # The replica's own memory: at least the weights it holds (253 MB file, mapped and touched), and
    # a peak no lower than now.
    stats = member.engine_stats
    assert 200e6 < stats["rss_bytes"] <= stats["peak_rss_bytes"] < 8e9
