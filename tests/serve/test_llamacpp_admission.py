"""A request the llama.cpp engine cannot set up fails alone (issue 11): the decode loop goes on for
everyone else. Real bundled model, driven directly (no Ray, no HTTP)."""

import asyncio

import pytest

from serve.config import ModelConfig
from serve.engines.base import GenerationRequest, SamplingParams

pytestmark = pytest.mark.integration


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
