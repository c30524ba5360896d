"""The quantization ladder (serve/quantize.py): sources a user gets wrong are refused in one line,
before any work; the bundled judge expands to an F16 GGUF that holds its Q4_K_M values, keeps its
metadata and continues a prompt as the original does; llama.cpp writes the rungs with digests."""

from pathlib import Path

import numpy as np
import pytest

from serve.model_files import sha256_of
from serve.quantize import LADDER, QuantizeError, ladder, parse_types, read_header

gguf = pytest.importorskip("gguf")


def write_gguf(path: Path, tensors: dict, file_type=None) -> Path:
    """A small GGUF: name -> float array (written F32/F16 as its dtype) or (Q8_0 bytes, quant type)."""
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("tiny")
    writer.add_token_list(["<pad>", "a", "b"])
    if file_type is not None:
        writer.add_file_type(file_type)
    for name, value in tensors.items():
        if isinstance(value, tuple):
            writer.add_tensor(name, value[0], raw_dtype=value[1])
        else:
            writer.add_tensor(name, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def q8(rows=4, cols=64):
    return gguf.quants.quantize(np.linspace(-1, 1, rows * cols, dtype=np.float32).reshape(rows, cols),
                                gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0


# --- a source or a type the user can fix: one line, what to do --------------------------------------------

@pytest.mark.parametrize("types, message", [
    (["Q4_K_M", "Q9_K"], "unknown type 'Q9_K'; choose from Q2_K"),
    (["", " "], "no type given; e.g. --types Q2_K,Q3_K_M"),
])
def test_unknown_types_are_refused(types, message):
    with pytest.raises(QuantizeError, match=message) as e:
        parse_types(types)
    assert "\n" not in str(e.value)


def test_types_are_upper_cased_and_kept_once_in_order():
    assert parse_types(["q8_0", "Q2_K", " q8_0 ", "f16"]) == ["Q8_0", "Q2_K", "F16"]
    assert parse_types(LADDER) == list(LADDER)


def test_bad_sources_are_refused_in_one_line_before_any_work(tmp_path):
    text = tmp_path / "model.gguf"
    text.write_text("not a model")
    quantized = write_gguf(tmp_path / "q8.gguf", {"w": q8()}, file_type=7)
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(quantized.read_bytes()[:40])
    cases = {
        str(tmp_path / "missing.gguf"): "not found; give a 16-bit GGUF file",
        str(text): "is not a GGUF file; give a 16-bit GGUF file",
        str(truncated): "is not a readable GGUF file",
        str(quantized): "holds Q8_0 weights; llama.cpp quantizes from 16-bit weights",
        "bundled:llama-7b": "unknown bundled model; leave SOURCE out",
    }
    for source, message in cases.items():
        with pytest.raises(QuantizeError, match=message) as e:
            ladder(source, ["Q8_0"], str(tmp_path / "out"))
        assert "\n" not in str(e.value), source
    with pytest.raises(QuantizeError, match="unknown type"):  # the types are checked first
        ladder(str(tmp_path / "missing.gguf"), ["Q1"], str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_the_header_reader_agrees_with_gguf_reader(tmp_path):
    path = write_gguf(tmp_path / "f16.gguf", {
        "norm": np.ones(64, np.float32), "w": np.ones((8, 64), np.float16), "q": q8()}, file_type=1)
    scalars, tensors = read_header(path)
    reader = gguf.GGUFReader(path)
    assert tensors == [(t.name, int(t.n_elements), t.tensor_type.name) for t in reader.tensors]
    assert scalars["general.name"] == "tiny" and scalars["general.file_type"] == 1
    assert scalars["general.architecture"] == "llama" and "tokenizer.ggml.tokens" not in scalars  # arrays skipped


# --- the bundled judge: expansion and a small ladder (real files, real llama.cpp) ------------------------

@pytest.fixture(scope="module")
def expanded(bundled_model):
    from serve.quantize import expand_bundled

    return expand_bundled()  # made once per cache (~30 s on two cores), then found


@pytest.fixture
def out(tmp_path):
    """A folder for ladder files, emptied after the test: pytest keeps old tmp dirs, and these weigh 0.2-0.5 GB each."""
    yield tmp_path
    for path in tmp_path.rglob("*.gguf"):
        path.unlink()


@pytest.fixture(scope="module")
def original_continuation(bundled_model):
    from serve.quantize import greedy_continuation

    return greedy_continuation(bundled_model.path, tokens=10)


@pytest.mark.integration
def test_the_expansion_holds_the_dequantized_values_and_all_metadata(bundled_model, expanded):
    original, copy = gguf.GGUFReader(bundled_model.path), gguf.GGUFReader(expanded)
    assert [f for f in copy.fields if not f.startswith("GGUF.")] == [f for f in original.fields if not f.startswith("GGUF.")]
    for name, field in original.fields.items():
        if name.startswith("GGUF.") or name == "general.file_type":
            continue
        assert copy.fields[name].types == field.types, name
        assert copy.fields[name].contents() == field.contents(), name  # the tokenizer's 262,144 tokens included
    assert original.fields["general.file_type"].contents() == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    assert copy.fields["general.file_type"].contents() == 1  # LLAMA_FTYPE_MOSTLY_F16
    assert [(t.name, list(t.shape)) for t in copy.tensors] == [(t.name, list(t.shape)) for t in original.tensors]
    for a, b in zip(original.tensors, copy.tensors):
        if a.tensor_type == gguf.GGMLQuantizationType.F32:  # norms stay F32, bit for bit
            assert b.tensor_type == gguf.GGMLQuantizationType.F32 and np.array_equal(a.data, b.data), a.name
            continue
        assert b.tensor_type == gguf.GGMLQuantizationType.F16, a.name
        values = gguf.quants.dequantize(a.data, a.tensor_type)
        # Each value is the original's dequantized value rounded to F16 (11 significant bits).
        assert np.array_equal(np.asarray(b.data).reshape(values.shape), values.astype(np.float16)), a.name
        assert np.allclose(np.asarray(b.data, np.float32).reshape(values.shape), values, rtol=2 ** -11, atol=1e-7)


@pytest.mark.integration
def test_the_expansion_continues_like_the_original(expanded, original_continuation):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(expanded), n_ctx=64, verbose=False)
    try:
        tokens = [int(t) for _, t in zip(range(10), llm.generate(llm.tokenize(b"The capital of France is"), temp=0.0))]
        assert tokens == original_continuation
        # FACTS.md: llama.cpp (Q4_K_M) continues " the capital of the country of France. It is the largest"
        assert llm.detokenize(tokens).decode().startswith(" the capital of the country of France.")
    finally:
        llm.close()


@pytest.mark.integration
def test_a_small_ladder_has_digests_sizes_in_order_and_is_made_once(expanded, original_continuation, out):
    from serve.quantize import greedy_continuation

    rungs = ladder(None, ["Q8_0", "Q2_K"], str(out))
    assert [r.type for r in rungs] == ["Q8_0", "Q2_K"]
    for r in rungs:
        path = Path(r.path)
        assert path.parent == out and path.name == f"gemma-3-270m.from-q4_k_m.{r.type}.gguf"
        assert r.sha256 == sha256_of(path) and r.bytes == path.stat().st_size and not r.reused
        assert r.source == str(expanded) and r.from_bundled and r.parameters == 268_098_176
    q8_0, q2_k = rungs
    assert q2_k.bytes < q8_0.bytes < Path(expanded).stat().st_size
    assert 2.5 < q2_k.bits_per_weight < q8_0.bits_per_weight < 9 and q8_0.tensor_types == {"Q8_0": 127, "F32": 109}
    assert greedy_continuation(q8_0.path, tokens=3) == original_continuation[:3]  # it loads and talks
    again = ladder(None, ["Q2_K"], str(out))  # already there with the right digest: kept
    assert again[0].reused and again[0].sha256 == q2_k.sha256 and again[0].seconds == 0
    Path(q2_k.path).write_bytes(b"GGUF broken")  # a file whose digest is wrong is made again
    remade = ladder(None, ["Q2_K"], str(out))[0]
    assert not remade.reused and remade.sha256 == q2_k.sha256


@pytest.mark.integration
def test_the_bundled_file_given_as_source_is_expanded(bundled_model, expanded, out):
    rung = ladder(str(bundled_model.path), ["F16"], str(out))[0]
    assert rung.source == str(expanded) and rung.from_bundled
    assert rung.sha256 == rung.source_sha256  # F16 from an F16 file: llama.cpp copies it byte for byte
    direct = ladder(str(expanded), ["f16"], str(out / "direct"))[0]  # a 16-bit SOURCE is taken as it is
    assert direct.made_from == "F16 GGUF" and not direct.from_bundled and direct.sha256 == rung.sha256
