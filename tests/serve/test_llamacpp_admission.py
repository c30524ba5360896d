"""A request the llama.cpp engine cannot set up fails alone (issue 11): the decode loop goes on for
everyone else. Real bundled model, driven directly (no Ray, no HTTP)."""

import asyncio
import functools

import pytest

from serve.config import ModelConfig
from serve.engines.base import GenerationRequest, SamplingParams
from tests.serve.llama_checks import RecordingLlama, assert_same_within_kernel_rounding

pytestmark = pytest.mark.integration


def _greedy_request(engine, text, max_tokens, **params):
    """A greedy request for `text`, its text kept (as the route sends it) for cache matching."""
    return GenerationRequest(engine.tokenize(text), SamplingParams(max_tokens=max_tokens, temperature=0, **params),
                             prompt_text=text)


def test_a_request_whose_admission_fails_fails_alone_and_the_engine_keeps_decoding(bundled_model):
    from serve.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(ModelConfig(parallel=2, context_length=512, batch_tokens=128, cache_slots=0, threads=2))

    async def scenario():
        await engine.start()
        try:
            scheduler = engine._scheduler
            make_sampler = scheduler._sampler

            def sampler(params, index):
                if params.seed == 666:  # stands for any setup failure: a sampler or a prompt it cannot take
                    raise RuntimeError("cannot build this sampler")
                return make_sampler(params, index)

            scheduler._sampler = sampler
            bad = GenerationRequest(engine.tokenize("Hello"), SamplingParams(max_tokens=4, seed=666), n=2)
            with pytest.raises(RuntimeError, match="cannot build"):
                await asyncio.wait_for(engine.generate(bad), 30)
            good = GenerationRequest(engine.tokenize("Hello"), SamplingParams(max_tokens=4, temperature=0), n=2)
            result = await asyncio.wait_for(engine.generate(good), 60)  # it used to hang: the loop had died
            assert len(result.samples) == 2 and engine.healthy()
            assert engine.stats()["busy_slots"] == 0
        finally:
            await engine.shutdown()

    asyncio.run(scenario())


def test_samples_start_as_slots_free_up_and_late_ones_reuse_the_cached_prompt(bundled_model):
    """parallel 4, a request of 3 long samples decoding: a second request of 3 must not wait for 3
    free slots - its samples take the one free slot in turn, and the later ones start from the
    prompt its first sample left in the cache (one token computed, not the prompt again)."""
    from serve.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(ModelConfig(parallel=4, context_length=512, batch_tokens=128, cache_slots=4, threads=2))

    async def scenario():
        await engine.start()
        try:
            long = GenerationRequest(engine.tokenize("Tell a long story about a lighthouse keeper."),
                                     SamplingParams(max_tokens=120, temperature=1.0, seed=1), n=3)
            short_text = "List three colours of the rainbow, unique prompt 5521:"
            short = GenerationRequest(engine.tokenize(short_text), SamplingParams(max_tokens=6, temperature=1.0, seed=2), n=3)
            first = asyncio.create_task(engine.generate(long))
            while engine.stats()["busy_slots"] < 3:
                await asyncio.sleep(0.01)
            before = engine.stats()["prompt_tokens_evaluated"]
            second = asyncio.create_task(engine.generate(short))
            busy_seen = 0
            while not second.done():
                busy_seen = max(busy_seen, engine.stats()["busy_slots"])
                await asyncio.sleep(0.01)
            assert not first.done(), "the short request waited for the long one to free its slots"
            result = await second
            evaluated = engine.stats()["prompt_tokens_evaluated"] - before
            assert busy_seen == 4
            assert len(result.samples) == 3 and all(1 <= s.completion_tokens <= 6 for s in result.samples)
            assert len({s.text for s in result.samples}) > 1  # each sample its own seed
            assert evaluated <= len(short.prompt_tokens) + 2, f"{evaluated} prompt tokens computed"
            assert len((await first).samples) == 3 and engine.stats()["busy_slots"] == 0
        finally:
            await engine.shutdown()

    asyncio.run(scenario())


def test_a_new_sequence_decodes_next_to_the_others_and_the_cache_it_displaces_survives(bundled_model):
    """llama.cpp puts only consecutive sequence ids into one pass over the weights: a sequence
    placed in a far slot costs a second pass every step. A long sample decodes in slot 0, a short
    one finishes in slot 1: a third request must decode in slot 1 beside slot 0 - not in an empty
    cache slot - and the feedback that slot 1 cached must still serve its verdict step."""
    from serve.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(ModelConfig(parallel=2, context_length=512, batch_tokens=128, cache_slots=2, threads=2))

    async def scenario():
        await engine.start()
        try:
            recording = RecordingLlama(engine._scheduler._ll)
            engine._scheduler._ll = recording

            request = functools.partial(_greedy_request, engine)

            long = asyncio.create_task(engine.generate(request("Tell a long story about a lighthouse keeper.", 200)))
            while engine.stats()["busy_slots"] < 1:
                await asyncio.sleep(0.01)
            short_prompt = "###Task: grade this answer about tides. " * 4 + "###Feedback: "
            short = await engine.generate(request(short_prompt, 6))
            recording.steps.clear()
            third = await engine.generate(request("List three colours of the rainbow, unique prompt 8812:", 6))
            assert not long.done(), "the long sample finished first: the scenario needs it decoding"
            together = [sorted(set(step)) for step in recording.steps if len(set(step)) == 2]
            assert together and all(ids == [0, 1] for ids in together), recording.steps

            before = engine.stats()["prompt_tokens_evaluated"]
            verdict_text = short_prompt + short.samples[0].text + " [RESULT] "
            verdict = await engine.generate(request(verdict_text, 1, choices=["1", "2", "3", "4", "5"]))
            evaluated = engine.stats()["prompt_tokens_evaluated"] - before
            assert evaluated <= 8, f"{evaluated} prompt tokens computed: the displaced feedback was lost"
            assert verdict.samples[0].text in {"1", "2", "3", "4", "5"} and len(third.samples) == 1
            await long
        finally:
            await engine.shutdown()

    asyncio.run(scenario())


def test_a_sequence_beyond_a_finished_one_moves_down_and_goes_on_as_it_would_alone(bundled_model):
    """Samples decode in slots 0, 1 and 2 and the one in slot 1 finishes first, with nothing
    waiting to take its place: the gap would cost a second pass over the weights every step, so
    the sample in slot 2 moves into slot 1 (its KV copied) - and its continuation is still its own,
    as it decodes alone in a fresh engine, within llama.cpp's kernel rounding."""
    from serve.engines.llamacpp import LlamaCppEngine

    prompt = "Explain how a lighthouse keeper trims the lamp, step by step:"
    config = ModelConfig(parallel=3, context_length=512, batch_tokens=128, cache_slots=1, threads=2)

    def request(engine, text, max_tokens):
        return _greedy_request(engine, text, max_tokens, logprobs=2)

    async def alone():
        engine = LlamaCppEngine(config)
        await engine.start()
        try:
            return (await engine.generate(request(engine, prompt, 40))).samples[0]
        finally:
            await engine.shutdown()

    async def beside_others():
        engine = LlamaCppEngine(config)
        await engine.start()
        try:
            recording = RecordingLlama(engine._scheduler._ll)
            engine._scheduler._ll = recording
            started = []
            for text, max_tokens in (("Tell a long story about a storm at sea.", 60),
                                     ("Name one colour:", 4), (prompt, 40)):
                started.append(asyncio.create_task(engine.generate(request(engine, text, max_tokens))))
                while engine.stats()["busy_slots"] < len(started):  # each takes the next slot
                    await asyncio.sleep(0.005)
            first, short, moved = await asyncio.gather(*started)
            return recording.steps, first, moved.samples[0]
        finally:
            await engine.shutdown()

    steps, first, moved = asyncio.run(beside_others())
    assert first.samples[0].completion_tokens == 60 and moved.completion_tokens == 40
    after_short = [sorted(set(step)) for step in steps if len(set(step)) == 2]
    assert after_short and all(ids == [0, 1] for ids in after_short), steps
    assert_same_within_kernel_rounding(asyncio.run(alone()).logprobs, moved.logprobs)


def test_a_sequence_does_not_move_down_over_a_feedback_its_verdict_step_still_needs(bundled_model):
    """No cache slots: a short feedback finishes in slot 0 while a long sample decodes in slot 1.
    Moving the long one down would close the gap but overwrite the feedback with nowhere to keep
    it, and its verdict step would compute the whole prompt again: the gap stays, and the verdict
    step computes only the few tokens after the feedback."""
    from serve.engines.llamacpp import LlamaCppEngine

    engine = LlamaCppEngine(ModelConfig(parallel=2, context_length=512, batch_tokens=128, cache_slots=0, threads=2))
    feedback_prompt = "###Task: grade this answer about tides. " * 4 + "###Feedback: "

    request = functools.partial(_greedy_request, engine)

    async def scenario():
        await engine.start()
        try:
            feedback = asyncio.create_task(engine.generate(request(feedback_prompt, 6)))
            while engine.stats()["busy_slots"] < 1:
                await asyncio.sleep(0.005)
            long = asyncio.create_task(engine.generate(request("Tell a long story about a lighthouse keeper.", 80)))
            feedback = await feedback
            for _ in range(3):  # decode steps of the long sample alone, beyond the gap
                steps = engine.stats()["decode_steps"]
                while engine.stats()["decode_steps"] == steps:
                    await asyncio.sleep(0.005)
            assert not long.done(), "the long sample finished first: the scenario needs it decoding"
            before = engine.stats()["prompt_tokens_evaluated"]
            verdict_text = feedback_prompt + feedback.samples[0].text + " [RESULT] "
            verdict = await engine.generate(request(verdict_text, 1, choices=["1", "2", "3", "4", "5"]))
            evaluated = engine.stats()["prompt_tokens_evaluated"] - before
            assert evaluated <= 8, f"{evaluated} prompt tokens computed: the feedback's cache was overwritten"
            assert verdict.samples[0].text in {"1", "2", "3", "4", "5"}
            assert (await long).samples[0].completion_tokens == 80
        finally:
            await engine.shutdown()

    asyncio.run(scenario())
