"""A study's judges, the route that serves them together, and the score run of each judge x repeat.

The first llama.cpp member under serve.models is the template of the ladder: each rung is served
like it, from the rung's file, under the template's id + "-" + the type ("gemma3-270m-q8_0").
Every other model id under serve.models is a judge as it is (e.g. the 16-bit model on vLLM).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import List, Optional, Sequence

from jobs.config import JobConfig
from jobs.errors import ConfigError

RUNS, SPEED = "runs", "speed"  # folders under output.dir: quality runs, and the judges timed alone


@dataclass(frozen=True)
class StudyJudge:
    id: str  # the model id on the route
    engine: str
    rung: Optional[str] = None  # the ladder type; None: a judge under serve.models as it is
    file: Optional[dict] = None  # the rung's GGUF: path, bytes, sha256, bits_per_weight
    model: Optional[str] = None  # what a non-ladder judge loads (serve.models[].model)


@dataclass(frozen=True)
class StudyPlan:
    judges: List[StudyJudge]
    original: str
    template: Optional[str]  # the template member's id (not served itself)

    def judge(self, judge_id: str) -> StudyJudge:
        return next(j for j in self.judges if j.id == judge_id)


def rung_id(template_id: str, rung: str) -> str:
    return f"{template_id}-{rung.lower()}"


def plan(cfg: JobConfig, ladder_files: Sequence = ()) -> StudyPlan:
    """The judges of the study (rungs filled in from `ladder_files`, serve.quantize.LadderFile's)."""
    st = cfg.study
    template = next((m for m in cfg.serve.models if m.engine == "llama.cpp"), None)
    if st.ladder and template is None:
        raise ConfigError("study.ladder: no llama.cpp member under serve.models to serve the rungs like; add one "
                          "(its id names the rungs, its settings serve them), or set study.ladder=[]")
    files = {f.type: f for f in ladder_files}
    judges: List[StudyJudge] = []
    for rung in dict.fromkeys(t.upper() for t in st.ladder):
        f = files.get(rung)
        described = None if f is None else {"path": f.path, "bytes": f.bytes, "sha256": f.sha256,
                                            "bits_per_weight": round(f.bits_per_weight, 3)}
        judges.append(StudyJudge(rung_id(template.id, rung), "llama.cpp", rung, described))
    for m in cfg.serve.models:
        if (template is not None and m.id == template.id and st.ladder) or any(j.id == m.id for j in judges):
            continue
        judges.append(StudyJudge(m.id, m.engine, model=m.model))
    if len(judges) < 2:
        raise ConfigError(f"study: {len(judges)} judge(s) ({', '.join(j.id for j in judges) or 'none'}); a study "
                          "compares at least two: list ladder types in study.ladder, or more models under serve.models")
    ids = [j.id for j in judges]
    original = st.original or _default_original(judges)
    if original not in ids:
        raise ConfigError(f"study.original: '{original}' is not one of the study's judges ({', '.join(ids)})")
    return StudyPlan(judges, original, template.id if template is not None and st.ladder else None)


# llama.cpp types from the most precise down: the default original is the most precise rung.
PRECISION = ("F32", "BF16", "F16", "Q8_0", "Q6_K", "Q5_1", "Q5_K_M", "Q5_K_S", "Q5_0", "Q4_1", "Q4_K_M", "Q4_K_S",
             "Q4_0", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K", "Q2_K_S")


def _default_original(judges: List[StudyJudge]) -> str:
    others = [j for j in judges if j.rung is None]
    if others:
        return others[0].id
    rank = {t: i for i, t in enumerate(PRECISION)}
    return min(judges, key=lambda j: rank.get(j.rung, len(rank))).id


def route_config(cfg: JobConfig, study: StudyPlan):
    """serve.models with the template replaced by one member per rung, each loading its file."""
    models = []
    for m in cfg.serve.models:
        if m.id == study.template:
            for j in study.judges:
                if j.rung is not None:
                    models.append(replace(m, id=j.id, model=j.file["path"], name=None))
        else:
            models.append(m)
    return replace(cfg.serve, models=models)


def run_dir(out_dir: Path, judge_id: str, repeat: int) -> Path:
    return out_dir / RUNS / judge_id / f"r{repeat}"


def speed_dir(out_dir: Path, judge_id: str) -> Path:
    return out_dir / SPEED / judge_id


def score_config(cfg: JobConfig, judge_id: str, out: Path, url: str, api_key: Optional[str],
                 seed_offset: int = 0, limit: Optional[int] = None) -> JobConfig:
    """The score job of one judge in the study: the study's route as its judge.url, its own output
    dir, no W&B run of its own (the study's run names it). Repeats differ by their seeds."""
    sub = copy.deepcopy(cfg)
    sub.judge.model, sub.judge.url, sub.judge.api_key = judge_id, url, api_key
    if cfg.sampling.seed is not None:
        sub.sampling.seed = cfg.sampling.seed + seed_offset
    sub.output.dir = str(out)
    sub.tracking.mode = "disabled"
    if limit is not None:
        sub.dataset.limit = limit if cfg.dataset.limit is None else min(limit, cfg.dataset.limit)
    return sub


def repeat_seed_offset(repeat: int) -> int:
    """Repeat 1 samples with sampling.seed, repeat k with seed + 1000 (k - 1): other draws, same rows."""
    return 1000 * (repeat - 1)

