"""The llama.cpp engine on the real bundled model, driven directly (no Ray, no HTTP)."""

import asyncio
import math

import pytest

from serve.config import ModelConfig
from serve.engines.base import GenerationRequest, PromptTooLong, SamplingParams
from tests.serve.llama_checks import assert_same_within_kernel_rounding

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(bundled_model):
    from serve.engines.llamacpp import LlamaCppEngine

    eng = LlamaCppEngine(ModelConfig(parallel=4, context_length=1024, batch_tokens=256))
    asyncio.run(eng.start())
    yield eng
    asyncio.run(eng.shutdown())


def generate(engine, text, n=1, **params):
    request = GenerationRequest(engine.tokenize(text), SamplingParams(**params), n)
    return asyncio.run(engine.generate(request))


def test_greedy_continuation_of_the_bundled_judge(engine):
    # Measured with llama.cpp and transformers alike (shared/design/FACTS.md).
    result = generate(engine, "The capital of France is", max_tokens=12, temperature=0)
    assert result.samples[0].text.startswith(" the capital of the country of France.")
    assert result.samples[0].finish_reason == "length" and result.samples[0].completion_tokens == 12
    assert engine.info.model_sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def test_same_prompt_again_reuses_its_cached_prefix(engine):
    text = "A long shared instruction about grading essays carefully and fairly. " * 4
    first = generate(engine, text, max_tokens=2, temperature=0)
    before = engine.stats()["prompt_tokens_evaluated"]
    again = generate(engine, text, max_tokens=2, temperature=0)
    assert again.cached_tokens == again.prompt_tokens - 1  # all but the last token come from cache
    assert engine.stats()["prompt_tokens_evaluated"] - before == 1
    assert again.samples[0].text == first.samples[0].text


def test_n_samples_share_one_prefill_and_repeat_with_a_seed(engine):
    text = "Write one sentence about the sea: unique prompt number 7341."
    before = engine.stats()["prompt_tokens_evaluated"]
    result = generate(engine, text, n=3, max_tokens=16, temperature=1.0, top_p=0.9, seed=11)
    n_prompt = result.prompt_tokens
    assert engine.stats()["prompt_tokens_evaluated"] - before <= n_prompt  # once, not three times
    texts = [s.text for s in result.samples]
    assert len(set(texts)) > 1  # different seeds per sample
    again = generate(engine, text, n=3, max_tokens=16, temperature=1.0, top_p=0.9, seed=11)
    assert [s.text for s in again.samples] == texts


def test_choices_constrain_the_answer_and_logprobs_cover_them(engine):
    result = generate(engine, "Feedback: It is fine. [RESULT] ", max_tokens=1, temperature=0, logprobs=5,
                      choices=["1", "2", "3", "4", "5"])
    sample = result.samples[0]
    assert sample.text in {"1", "2", "3", "4", "5"} and sample.finish_reason == "stop"
    top = sample.logprobs.top_logprobs[0]
    assert set(top) == {"1", "2", "3", "4", "5"}
    assert sum(math.exp(v) for v in top.values()) == pytest.approx(1.0, abs=1e-6)
    assert max(top, key=top.get) == sample.text
    letters = generate(engine, "Which is better? [RESULT] ", max_tokens=3, temperature=1.0, seed=3, choices=["A", "B"])
    assert letters.samples[0].text in {"A", "B"}


def test_stop_strings_cut_the_text(engine):
    result = generate(engine, "1, 2, 3, 4,", max_tokens=30, temperature=0, stop=[" 7"])
    assert result.samples[0].text == " 5, 6," and result.samples[0].finish_reason == "stop"


def test_too_long_prompts_and_too_many_samples_are_refused(engine):
    with pytest.raises(PromptTooLong, match="context is 1024 tokens"):
        generate(engine, "word " * 1100, max_tokens=4)
    with pytest.raises(ValueError, match="parallel"):
        generate(engine, "hi", n=5, max_tokens=4)


def test_a_cancelled_request_frees_its_sequences(engine):
    async def go():
        task = asyncio.create_task(engine.generate(GenerationRequest(
            engine.tokenize("Tell a very long story."), SamplingParams(max_tokens=900, temperature=1.0), n=2)))
        await asyncio.sleep(1.0)
        assert engine.stats()["busy_slots"] == 2
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(50):
            if engine.stats()["busy_slots"] == 0:
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"slots still busy: {engine.stats()}")

    asyncio.run(go())
    assert generate(engine, "Still working?", max_tokens=3, temperature=0).samples[0].completion_tokens == 3


PROMPTS = ["Once upon a time", "The best way to cook rice is", "In 1492,", "Python is a",
           "My favourite colour is", "The weather today", "A good judge of essays", "def add(a, b):"]


def _greedy(prompts, together: bool, max_tokens: int = 24):
    """Greedy continuations with top-2 logprobs, from a fresh engine (no cached prefix to reuse)."""
    from serve.engines.llamacpp import LlamaCppEngine

    async def go():
        eng = LlamaCppEngine(ModelConfig(parallel=8, context_length=512, batch_tokens=256))
        await eng.start()
        reqs = [GenerationRequest(eng.tokenize(p), SamplingParams(max_tokens=max_tokens, temperature=0, logprobs=2))
                for p in prompts]
        try:
            if together:
                return [r.samples[0].logprobs for r in await asyncio.gather(*(eng.generate(r) for r in reqs))]
            return [(await eng.generate(r)).samples[0].logprobs for r in reqs]
        finally:
            await eng.shutdown()

    return asyncio.run(go())


def test_batched_decoding_matches_single_decoding_within_kernel_rounding(bundled_model):
    """Eight prompts at once vs one at a time, greedy: the same continuations as far as llama.cpp's
    kernels allow (`assert_same_within_kernel_rounding` says how far, and why not exactly)."""
    single, batched = _greedy(PROMPTS, together=False), _greedy(PROMPTS, together=True)
    for a, b in zip(single, batched):
        assert_same_within_kernel_rounding(a, b)


def test_the_verdict_step_reuses_the_feedback_in_the_cache(engine):
    """The score token after "[RESULT]" costs the few tokens after the feedback, not a prefill."""
    prompt = "###Task: grade this answer to a question about tides. " * 6 + "###Feedback: "
    feedback = generate(engine, prompt, n=2, max_tokens=20, temperature=1.0, seed=4, stop=["[RESULT]"])
    for sample in feedback.samples:
        before = engine.stats()["prompt_tokens_evaluated"]
        verdict = generate(engine, prompt + sample.text + " [RESULT] ", max_tokens=1, temperature=0,
                           logprobs=5, choices=["1", "2", "3", "4", "5"])
        evaluated = engine.stats()["prompt_tokens_evaluated"] - before
        assert verdict.samples[0].text in {"1", "2", "3", "4", "5"}
        assert evaluated <= 8, f"{evaluated} of {verdict.prompt_tokens} prompt tokens computed again"
        assert verdict.cached_tokens >= verdict.prompt_tokens - 8
