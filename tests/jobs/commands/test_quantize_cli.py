"""`judgefleet quantize` through the CLI: arguments reach the ladder, the table and quantize.json show
every file; a source or a type the user can fix -> one line on stderr, exit 2. The ladder itself
(real GGUF files, real llama.cpp) is tested in tests/serve/test_quantize.py."""

import json
from pathlib import Path

import pytest

from jobs.cli import main
from serve.quantize import LadderFile


def fake_rungs(folder: Path, types, from_bundled=True):
    sizes = {"Q2_K": 237_077_184, "Q8_0": 291_543_744, "F16": 542_833_344}
    rungs = []
    for i, name in enumerate(types):
        path = folder / f"model.{name}.gguf"
        path.write_bytes(b"GGUF")
        rungs.append(LadderFile(name, str(path), sizes[name], f"{i}" * 64, 268_098_176, {name: 127, "F32": 109},
                                str(folder / "model.f16.gguf"), "ab" * 32, "bundled judge" if from_bundled else "F16 GGUF",
                                from_bundled, 1.5, reused=name == "F16"))
    return rungs


@pytest.fixture
def calls(monkeypatch, tmp_path):
    seen = []

    def ladder(source, types, out_dir, on_step=None):
        seen.append((source, types, out_dir))
        on_step("quantizing")
        return fake_rungs(tmp_path, types or ("Q2_K", "Q8_0", "F16"), from_bundled=source is None)

    monkeypatch.setattr("jobs.commands.quantize.quantize_ladder", ladder)
    monkeypatch.setenv("COLUMNS", "200")  # rich: one line per table row
    return seen


def test_the_default_ladder_is_the_bundled_judge_into_the_cache(calls, tmp_path, capsys):
    assert main(["quantize"]) == 0
    assert calls == [(None, None, None)]
    out = capsys.readouterr().out
    for text in ("Q2_K", "7.07", "237.1 MB", "000000000000", "model.Q2_K.gguf", "F16", "16.20", "there already",
                 "holds Q4_K_M's values", f"in {tmp_path}"):
        assert text in out, text
    report = json.loads((tmp_path / "quantize.json").read_text())
    assert report["source"] == {"path": str(tmp_path / "model.f16.gguf"), "sha256": "ab" * 32,
                                "made_from": "bundled judge", "from_bundled": True, "parameters": 268_098_176}
    assert [f["type"] for f in report["files"]] == ["Q2_K", "Q8_0", "F16"]
    q2 = report["files"][0]
    assert q2["bits_per_weight"] == round(237_077_184 * 8 / 268_098_176, 3) and q2["sha256"] == "0" * 64
    assert q2["tensor_types"] == {"Q2_K": 127, "F32": 109} and q2["bytes"] == 237_077_184 and not q2["reused"]
    assert "source" not in q2 and len(report["notes"]) == 1


def test_source_types_and_out_reach_the_ladder(calls, tmp_path, capsys):
    assert main(["quantize", "m-f16.gguf", "--types", "Q8_0,F16", "--out", str(tmp_path)]) == 0
    assert calls == [("m-f16.gguf", ("Q8_0", "F16"), str(tmp_path))]
    report = json.loads((tmp_path / "quantize.json").read_text())
    assert report["notes"] == [] and report["settings"] == {"source": "m-f16.gguf", "types": ["Q8_0", "F16"],
                                                            "out": str(tmp_path)}


@pytest.mark.parametrize("args, message", [
    (["quantize", "no/such/model.gguf"], "SOURCE 'no/such/model.gguf' not found; give a 16-bit GGUF file"),
    (["quantize", "--types", "Q4_K_M,Q7"], "--types: unknown type 'Q7'; choose from"),
])
def test_what_a_user_can_fix_is_one_line_and_exit_2(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("judgefleet: error: ") and message in err and err.count("\n") == 1, err


def test_a_file_that_is_not_a_gguf_is_refused(tmp_path, capsys):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\0" * 64)
    assert main(["quantize", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "is not a GGUF file" in capsys.readouterr().err
