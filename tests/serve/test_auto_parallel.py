"""`parallel: 0`: a llama.cpp replica chooses how many sequences to decode together from its node."""

import pytest

from serve.config import AUTO_PARALLEL_MIN, ModelConfig, ServeConfig, route_limits, validate_serve_config
from serve.engines.llamacpp import AUTO_PARALLEL_MAX, auto_parallel, kv_bytes_per_token

GIB = 1 << 30
# The bundled judge's GGUF metadata (Gemma 3 270M), as llama.cpp reads it.
GEMMA3_270M = {"general.architecture": "gemma3", "gemma3.block_count": "18", "gemma3.attention.head_count": "4",
               "gemma3.attention.head_count_kv": "1", "gemma3.attention.key_length": "256",
               "gemma3.attention.value_length": "256", "gemma3.embedding_length": "640"}


def test_kv_bytes_per_token_from_gguf_metadata():
    assert kv_bytes_per_token(GEMMA3_270M) == 18 * 1 * (256 + 256) * 2
    # No key_length given: embedding_length / heads, as llama.cpp assumes.
    llama = {"general.architecture": "llama", "llama.block_count": "32", "llama.attention.head_count": "32",
             "llama.attention.head_count_kv": "8", "llama.embedding_length": "4096"}
    assert kv_bytes_per_token(llama) == 32 * 8 * (128 + 128) * 2


@pytest.mark.parametrize("cores, expected", [(1, AUTO_PARALLEL_MIN), (2, 16), (4, 32), (64, AUTO_PARALLEL_MAX)])
def test_more_cores_decode_more_sequences_together_within_bounds(cores, expected):
    assert auto_parallel(cores, 64 * GIB, 40 << 20, cache_slots=8) == expected


def test_memory_bounds_the_choice_and_it_never_reaches_zero():
    per_slot = kv_bytes_per_token(GEMMA3_270M) * 2048  # ~38 MB
    # A quarter of 1 GiB holds 7 slots of 2048 tokens; 2 are cache slots.
    assert auto_parallel(8, 1 * GIB, per_slot, cache_slots=2) == 5
    assert auto_parallel(8, 10 << 20, per_slot, cache_slots=8) == 1


def test_zero_means_auto_for_llama_cpp_only_and_the_route_limits_n_to_its_floor():
    validate_serve_config(ServeConfig(models=[ModelConfig(parallel=0)]))
    with pytest.raises(ValueError, match=r"serve.models.0.parallel: must be at least 1, got 0"):
        validate_serve_config(ServeConfig(models=[ModelConfig(engine="vllm", parallel=0)]))
    with pytest.raises(ValueError, match=r"or 0: chosen from the node's cores"):
        validate_serve_config(ServeConfig(models=[ModelConfig(parallel=-1)]))
    limits = route_limits(ServeConfig(models=[ModelConfig(parallel=0)]), "gemma3-270m")
    assert limits.n == AUTO_PARALLEL_MIN and limits.n_key == "serve.models.0.parallel"
