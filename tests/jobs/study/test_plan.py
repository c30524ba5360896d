"""The study's judges from a config: one per ladder rung (served like the template member), the
other models as they are, the original, and the configs of its score runs."""

from types import SimpleNamespace

import pytest

from jobs.config import load_study_config as load_config
from jobs.errors import ConfigError
from jobs.study.plan import StudyJudge, plan, repeat_seed_offset, route_config, run_dir, score_config
from tests.conftest import REPO

STUDY = REPO / "conf" / "study.yaml"


def ladder_file(rung, path="/models/x.gguf"):
    return SimpleNamespace(type=rung, path=path.replace("x", rung), bytes=1000, sha256="ab" * 32,
                           bits_per_weight=4.5)


def test_the_default_study_is_every_rung_plus_vllm_with_vllm_as_the_original():
    cfg = load_config(STUDY)
    p = plan(cfg, [ladder_file(t) for t in cfg.study.ladder])
    assert [j.id for j in p.judges] == ["gemma3-270m-q2_k", "gemma3-270m-q3_k_m", "gemma3-270m-q4_k_m",
                                        "gemma3-270m-q5_k_m", "gemma3-270m-q8_0", "gemma3-270m-f16",
                                        "gemma3-270m-vllm"]
    assert p.original == "gemma3-270m-vllm" and p.template == "gemma3-270m"
    assert p.judge("gemma3-270m-q8_0").file["path"] == "/models/Q8_0.gguf"
    assert p.judge("gemma3-270m-vllm") == StudyJudge("gemma3-270m-vllm", "vllm", model="bundled:gemma3-270m-q4_k_m")


def test_the_route_serves_each_rung_like_the_template_and_the_rest_as_they_are():
    cfg = load_config(STUDY, ["study.ladder=[Q8_0,Q2_K]"])
    p = plan(cfg, [ladder_file("Q8_0"), ladder_file("Q2_K")])
    models = route_config(cfg, p).models
    assert [(m.id, m.engine, m.model) for m in models] == [
        ("gemma3-270m-q8_0", "llama.cpp", "/models/Q8_0.gguf"), ("gemma3-270m-q2_k", "llama.cpp", "/models/Q2_K.gguf"),
        ("gemma3-270m-vllm", "vllm", "bundled:gemma3-270m-q4_k_m")]
    template = cfg.serve.models[0]
    assert all(m.threads == template.threads and m.parallel == template.parallel for m in models[:2])


def test_without_other_models_the_original_is_the_16_bit_rung_and_can_be_named():
    cfg = load_config(STUDY, ["serve.models=[{id: g, engine: llama.cpp}]", "study.original=null"])
    assert plan(cfg).original == "g-f16"
    cfg = load_config(STUDY, ["serve.models=[{id: g, engine: llama.cpp}]", "study.original=g-q2_k"])
    assert plan(cfg).original == "g-q2_k"
    cfg = load_config(STUDY, ["serve.models=[{id: g, engine: llama.cpp}]", "study.original=null",
                              "study.ladder=[Q2_K,Q8_0,Q4_K_M]"])
    assert plan(cfg).original == "g-q8_0"  # the most precise rung


@pytest.mark.parametrize("overrides, words", [
    (["serve.models=[{id: v, engine: vllm}]"], "no llama.cpp member"),
    (["study.original=gemma3-270m-q6_k"], "study.original: 'gemma3-270m-q6_k' is not one of"),
    (["study.ladder=[]", "serve.models=[{id: v, engine: vllm}]", "study.original=v"], "a study compares at least two"),
])
def test_a_study_that_cannot_be_run_says_why(overrides, words):
    with pytest.raises(ConfigError, match=words):
        plan(load_config(STUDY, overrides))


@pytest.mark.parametrize("key, value", [("study.repeats", 0), ("study.resamples", 10), ("study.speed_rows", -1)])
def test_study_numbers_are_checked(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(STUDY, [f"{key}={value}"])


def test_each_run_is_a_score_job_on_the_study_route_with_its_own_dir_and_seed(tmp_path):
    cfg = load_config(STUDY, ["sampling.seed=7", "dataset.limit=10"])
    sub = score_config(cfg, "gemma3-270m-q8_0", run_dir(tmp_path, "gemma3-270m-q8_0", 2), "http://h:1/v1", "k",
                       seed_offset=repeat_seed_offset(2), limit=4)
    assert (sub.judge.model, sub.judge.url, sub.judge.api_key) == ("gemma3-270m-q8_0", "http://h:1/v1", "k")
    assert sub.sampling.seed == 1007 and sub.dataset.limit == 4 and sub.tracking.mode == "disabled"
    assert sub.output.dir == str(tmp_path / "runs" / "gemma3-270m-q8_0" / "r2")
    assert cfg.judge.url is None and cfg.sampling.seed == 7  # the study's own config is left alone
