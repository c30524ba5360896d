"""Secrets in the config never reach what a job writes: job.json, summary.json, report.html and the
W&B run. One policy (`jobs.redact`) for every writer."""

import json
import sys
import time

import pytest

from jobs.config import load_config
from jobs.data import resume
from jobs.errors import ConfigError
from jobs.redact import REDACTED, is_secret_name, redact, redact_url
from tests.conftest import QUICKSTART
from tests.wandb_records import offline_run_file, read_records

# One secret in each place a config can hold one, other than judge.api_key and serve.api_key.
SECRETS = {
    "judge-key": "sk-judge-key-0001",
    "serve-key": "sk-serve-key-0002",
    "env": "hf_env_value_0003",
    "env-odd-name": "plain-env-value-0004",
    "engine-key": "sk-engine-kwargs-0005",
    "engine-token": "hf_engine_token_0006",
    "url-pass": "url-password-0007",
    "url-user": "url-user-0008",
    "query": "query-token-0009",
    "nested": "nested-secret-0010",
}
MEMBERS = (
    "serve.models=[{id: gemma3-270m, model: 'bundled:gemma3-270m-q4_k_m', context_length: 2048, parallel: 8, "
    f"env: {{HF_TOKEN: {SECRETS['env']}, LLAMA_LOG: {SECRETS['env-odd-name']}}}, "
    f"engine_kwargs: {{api_key: {SECRETS['engine-key']}, hf_token: {SECRETS['engine-token']}, "
    f"headers: {{Authorization: 'Bearer {SECRETS['nested']}'}}}}}}, "
    "{id: gemma3-270m, name: upstream, engine: openai, context_length: 2048, "
    f"model: 'https://{SECRETS['url-user']}:{SECRETS['url-pass']}@judge.example:8443/v1?api_key={SECRETS['query']}', "
    "engine_kwargs: {model: remote-judge, api_key_env: UPSTREAM_KEY}}]"
)


def planted(*more):
    return [MEMBERS, f"judge.api_key={SECRETS['judge-key']}", f"serve.api_key={SECRETS['serve-key']}", *more]


def leaks(text: str):
    return sorted(name for name, secret in SECRETS.items() if secret in text)


# -- the policy ---------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["api_key", "apiKey", "hf_token", "Authorization", "aws_secret_access_key",
                                  "password", "db-passwd", "x.auth.token", "private_key", "client_secret"])
def test_names_of_credentials(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["max_tokens", "batch_tokens", "max_num_batched_tokens", "keep_prompt", "api_key_env",
                                  "top_logprobs", "model", "id_field", "monkey", "tokenizer", "judge_gpu"])
def test_names_that_are_not(name):
    assert not is_secret_name(name)


def test_urls_lose_their_credentials_only():
    assert redact_url("https://u:p@host:8443/v1") == f"https://{REDACTED}@host:8443/v1"
    assert redact_url("http://host/v1?api_key=abc&x=1") == f"http://host/v1?api_key={REDACTED}&x=1"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact_url("bundled:gemma3-270m-q4_k_m") == "bundled:gemma3-270m-q4_k_m"


def test_redact_is_idempotent_and_keeps_the_rest():
    cfg = load_config(QUICKSTART, planted())
    from jobs.config import to_dict

    once = redact(to_dict(cfg))
    assert redact(once) == once and not leaks(json.dumps(once))
    assert once["sampling"] == to_dict(cfg)["sampling"] and once["judge"]["model"] == "gemma3-270m"
    upstream = once["serve"]["models"][1]
    assert upstream["engine_kwargs"] == {"model": "remote-judge", "api_key_env": "UPSTREAM_KEY"}
    assert upstream["model"].startswith(f"https://{REDACTED}@judge.example:8443/v1")
    assert once["serve"]["models"][0]["env"] == {"HF_TOKEN": REDACTED, "LLAMA_LOG": REDACTED}
    assert once["serve"]["models"][0]["context_length"] == 2048


# -- job.json -----------------------------------------------------------------------------------
def test_job_json_holds_no_secret_and_a_rotated_one_resumes(tmp_path):
    """The fingerprint keeps what decides a verdict; a credential decides none, so it is replaced by
    a constant (not a digest: a rotated key must not make a finished output unresumable, and a digest
    of a short password can be searched for)."""
    out = tmp_path / "out"
    (out / "scores").mkdir(parents=True)
    cfg = load_config(QUICKSTART, planted(f"output.dir={out}"))
    resume.prepare(out, cfg, restart=False)
    text = (out / "job.json").read_text()
    assert not leaks(text)
    fingerprint = json.loads(text)["fingerprint"]
    assert fingerprint["serve.models.1.model"].startswith(f"https://{REDACTED}@judge.example:8443/v1")
    assert fingerprint["serve.models.0.engine_kwargs"]["api_key"] == REDACTED

    _finished_shard(out)
    rotated = MEMBERS.replace(SECRETS["url-pass"], "new-password").replace(SECRETS["engine-key"], "sk-new")
    resume.prepare(out, load_config(QUICKSTART, [rotated, f"output.dir={out}"]), restart=False)  # no error
    other = MEMBERS.replace("judge.example:8443", "other.example:8443")  # another judge: refused
    with pytest.raises(ConfigError, match="serve.models.1.model"):
        resume.prepare(out, load_config(QUICKSTART, [other, f"output.dir={out}"]), restart=False)


def test_a_job_json_written_with_secrets_resumes_and_loses_them(tmp_path):
    """job.json of an earlier version held the secrets themselves."""
    out = tmp_path / "out"
    (out / "scores").mkdir(parents=True)
    cfg = load_config(QUICKSTART, planted(f"output.dir={out}"))
    raw = {k: v for k, v in resume.fingerprint(cfg).items()}
    raw["serve.models.1.model"] = cfg.serve.models[1].model
    raw["serve.models.0.engine_kwargs"] = dict(cfg.serve.models[0].engine_kwargs)
    (out / "job.json").write_text(json.dumps({"fingerprint": raw}))
    assert leaks((out / "job.json").read_text())
    _finished_shard(out)
    resume.prepare(out, cfg, restart=False)
    assert not leaks((out / "job.json").read_text())


def _finished_shard(out):
    import pyarrow as pa

    from jobs.data.shards import manifest_path, write_json, write_shard

    shard = out / "scores" / "part-00000.parquet"
    write_shard(shard, pa.table({"row_id": ["a"]}))
    write_json(manifest_path(shard), {"shard": shard.name, "rows": 1, "row_ids": ["a"]})


# -- every file a score job writes --------------------------------------------------------------
def test_no_file_a_score_job_writes_holds_a_secret(tmp_path, monkeypatch):
    """job.json, summary.json, report.html and the offline W&B run (config, artifacts' metadata,
    run metadata), with secrets given on the command line as a user would. The judging itself (Ray)
    is left out: it writes scores, not config."""
    from jobs.commands.score import ScoreRun

    out = tmp_path / "out"
    args = planted(f"output.dir={out}", "dataset.limit=2", "tracking.mode=offline", "serve.port=null")
    monkeypatch.setattr(sys, "argv", ["judgefleet", "score", str(QUICKSTART), *args])  # W&B records argv
    cfg = load_config(QUICKSTART, args)
    run = ScoreRun(cfg)
    monkeypatch.setattr(run, "judge", lambda: run.finish(run.earlier_summary()[0], None, time.perf_counter(), []))
    run.run()

    # W&B's service writes the run file after the run finishes: search it once it is complete.
    deadline = time.monotonic() + 60
    while not any(r.WhichOneof("record_type") == "exit" for r in read_records(offline_run_file(out))):
        assert time.monotonic() < deadline, "the offline W&B run was not completed"
        time.sleep(0.5)
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"job.json", "summary.json", "report.html"} <= {p.name for p in written}
    found = {str(p.relative_to(out)): leaks(p.read_bytes().decode("latin-1")) for p in written}
    assert not {path: what for path, what in found.items() if what}
    # The W&B run holds the config (redacted) and the judge's member specs: the search above saw them.
    records = read_records(offline_run_file(out))
    (run_record,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    config = {item.key: json.loads(item.value_json) for item in run_record.config.update}
    assert config["serve"]["models"][0]["env"]["HF_TOKEN"] == REDACTED
    assert config["serve"]["models"][1]["model"].startswith(f"https://{REDACTED}@judge.example")
    inputs = [json.loads(u.value_json) for r in records if r.WhichOneof("record_type") == "config"
              for u in r.config.update if u.key == "inputs"]
    assert inputs and "model" in inputs[-1] and "dataset" in inputs[-1]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["judge"]["api_key"] == REDACTED
    assert summary["config"]["serve"]["models"][1]["engine_kwargs"]["api_key_env"] == "UPSTREAM_KEY"


def test_a_judge_url_with_a_password_is_not_written(tmp_path, monkeypatch):
    from jobs.commands.score import ScoreRun
    from serve.endpoint import Endpoint

    out = tmp_path / "out"
    url = f"https://{SECRETS['url-user']}:{SECRETS['url-pass']}@judge.example/v1"
    cfg = load_config(QUICKSTART, [f"judge.url={url}", "judge.model=j", f"output.dir={out}", "tracking.mode=disabled"])
    monkeypatch.setattr(ScoreRun, "check", lambda self: setattr(self, "out_dir", out) or out.mkdir() or True)
    run = ScoreRun(cfg)
    endpoint = Endpoint(url, "j", None, 4096, False, False)
    monkeypatch.setattr(run, "judge", lambda: run.finish(run.earlier_summary()[0], endpoint, time.perf_counter(), []))
    run.run()
    assert not {p.name: leaks(p.read_text()) for p in out.rglob("*") if p.is_file() and leaks(p.read_text())}
