"""Config mistakes fail before any Ray work, in one line that names the key, with a non-zero exit."""

import subprocess
import sys
import tempfile

import pytest

from jobs.config import load_config
from jobs.errors import ConfigError
from tests.conftest import QUICKSTART, REPO, free_port


def run_cli(*args, timeout=60):
    """The CLI in a subprocess; a score job writes into a temporary output dir, never the repo's runs/."""
    with tempfile.TemporaryDirectory() as out:
        extra = [f"output.dir={out}"] if args[0] == "score" and not any(a.startswith("output.dir=") for a in args) else []
        return subprocess.run([sys.executable, "-m", "jobs.cli", *args, *extra], cwd=REPO, capture_output=True, text=True,
                              timeout=timeout)


def test_quickstart_loads_with_the_documented_names():
    cfg = load_config(QUICKSTART, ["dataset.limit=5", "sampling.num_samples=1"])
    assert cfg.dataset.limit == 5 and cfg.sampling.num_samples == 1
    assert cfg.judge.url is None and cfg.judge.model == "gemma3-270m"
    assert cfg.serve.port is None and cfg.dataset.prompt_field is None  # a score job takes any free port
    assert cfg.sampling.max_tokens > 0 and cfg.sampling.temperature >= 0 and cfg.output.dir


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["dataset.limt=3"], "dataset.limt", "not in"),
        (["nosuch.key=1"], "nosuch", "unknown key"),
        (["dataset.limit=abc"], "dataset.limit", "expected an integer"),
        (["sampling.temperature=hot"], "sampling.temperature", "expected a number"),
        (["sampling.num_samples=0"], "sampling.num_samples", "at least 1"),
        (["sampling.top_p=1.5"], "sampling.top_p", "(0, 1]"),
        (["judge.mode=pairwise"], "judge.mode", "not one of absolute, relative"),
        (["judge.url=localhost:8000"], "judge.url", "not an http(s) URL"),
        (["judge.model=other"], "judge.model", "not one of the models under serve.models"),
        (["serve.models.0.parallel=-1"], "serve.models.0.parallel", "at least 1"),
        (["serve.port=70000"], "serve.port", "not a TCP port"),
        (["dataset.limit"], "dataset.limit", "not key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, key, words):
    with pytest.raises(ConfigError) as err:
        load_config(QUICKSTART, overrides)
    message = str(err.value)
    assert key in message and words in message
    assert "\n" not in message


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("dataset: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)
    no_path = tmp_path / "no_path.yaml"
    no_path.write_text("judge: {model: gemma3-270m}\n")
    with pytest.raises(ConfigError, match="dataset.path: required"):
        load_config(no_path)


@pytest.mark.parametrize(
    "args, words",
    [
        (["conf/nope.yaml"], "not found"),
        (["conf/quickstart.yaml", "dataset.limt=2"], "dataset.limt"),
        (["conf/quickstart.yaml", "sampling.max_tokens=many"], "sampling.max_tokens"),
        (["conf/quickstart.yaml", "dataset.path=/no/such/file.jsonl"], "matches no file"),
        (["conf/quickstart.yaml", "dataset.prompt_field=prompt_text"], "no column 'prompt_text'"),
        (["conf/quickstart.yaml", "output.dir=/proc/forbidden"], "output.dir"),
    ],
)
def test_cli_fails_fast_in_one_line(args, words):
    result = run_cli("score", *args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("judgefleet: error: ") and words in lines[0]
    assert "Traceback" not in result.stderr and "Ray" not in result.stderr


def test_cli_refuses_an_unreachable_url_before_ray():
    port = free_port()  # nothing listens there
    result = run_cli("score", "conf/quickstart.yaml", f"judge.url=http://127.0.0.1:{port}/v1")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr and f"127.0.0.1:{port}" in result.stderr
    assert "Started a local Ray" not in result.stderr


def test_cli_refuses_a_model_the_endpoint_does_not_serve(stub):
    result = run_cli("score", "conf/quickstart.yaml", f"judge.url={stub.url}", "judge.model=prometheus-7b")
    assert result.returncode == 2
    assert "'prometheus-7b' is not served" in result.stderr and "stub-judge" in result.stderr
