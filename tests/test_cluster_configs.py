"""The cluster launcher config, the generated RayService, the images and the manifests agree with
each other and with the conf file and the ray pin. Pure text and schema checks: no Ray, no
container engine, no Kubernetes."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from jobs.cli import main
from jobs.commands.k8s import offered_resources, rayservice
from jobs.config import load_config
from jobs.errors import ConfigError
from tests.conftest import REPO

MIXED = "conf/examples/mixed-fleet.yaml"
CLUSTER = "k8s/raycluster-mixed-fleet.yaml"
RAYSERVICE = "k8s/rayservice-mixed-fleet.yaml"
IMAGES = {"k8s/Dockerfile": ("judgefleet:0.1.0", "cpu", "cpu"), "k8s/Dockerfile.gpu": ("judgefleet-gpu:0.1.0", "gpu", "gpu")}
MANIFESTS = ("k8s/rayjob-quickstart.yaml", RAYSERVICE, CLUSTER, "k8s/rayjob-on-cluster.yaml")


def _pinned_ray() -> str:
    """The x.y.0 release that pyproject.toml's `ray[...]>=x.y,<x.(y+1)` pin allows."""
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'"ray\[[^\]]*\]>=(\d+)\.(\d+),<(\d+)\.(\d+)"', text)
    assert match, "pyproject.toml pins ray as ray[...]>=X.Y,<X.Z"
    return f"{match[1]}.{match[2]}.0"


def _extras() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_checked_in_rayservice_is_what_the_command_generates(capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the command is run from the repository root; its header names the paths it read
    assert main(["k8s", "rayservice", MIXED, "--cluster", CLUSTER]) == 0
    generated = capsys.readouterr().out
    assert generated == (REPO / RAYSERVICE).read_text(), (
        f"{RAYSERVICE} drifted from {MIXED}; regenerate it: judgefleet k8s rayservice {MIXED} > {RAYSERVICE}")


def test_generated_rayservice_carries_the_conf_serve_section_and_the_cluster_spec():
    doc = yaml.safe_load((REPO / RAYSERVICE).read_text())
    serve_yaml = yaml.safe_load(doc["spec"]["serveConfigV2"])
    cfg = load_config(REPO / MIXED)
    assert serve_yaml["proxy_location"] == cfg.serve.proxy_location
    assert serve_yaml["http_options"] == {"host": cfg.serve.host, "port": cfg.serve.port}
    args = serve_yaml["applications"][0]["args"]
    assert [m["name"] for m in args["models"]] == [m.name for m in cfg.serve.models]
    # What the route's builder makes of the generated args is the conf file's serve section.
    from serve.app import serve_config_from_dict

    rebuilt = serve_config_from_dict(args)
    assert rebuilt.models == cfg.serve.models
    assert doc["spec"]["rayClusterConfig"] == yaml.safe_load((REPO / CLUSTER).read_text())["spec"]


def test_rayservice_refuses_a_resource_no_worker_group_offers(tmp_path):
    cfg = load_config(REPO / MIXED, ["serve.models.0.resources={judge_tpu: 1}"])
    with pytest.raises(ConfigError, match="judge_tpu"):
        rayservice(MIXED, cfg.serve, str(REPO / CLUSTER))
    with pytest.raises(ConfigError, match="not found"):
        rayservice(MIXED, cfg.serve, str(tmp_path / "nope.yaml"))


def test_raycluster_offers_what_each_member_asks_for_on_the_right_image():
    doc = yaml.safe_load((REPO / CLUSTER).read_text())
    offered = offered_resources(doc["spec"])
    groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
    cfg = load_config(REPO / MIXED)
    for m in cfg.serve.models:
        (resource,) = m.resources
        (group,) = offered[resource]
        image = groups[group]["template"]["spec"]["containers"][0]["image"]
        wanted = "judgefleet-gpu:0.1.0" if m.engine == "vllm" else "judgefleet:0.1.0"
        assert image == wanted, (m.name, group, image)
        if m.num_gpus:
            limits = groups[group]["template"]["spec"]["containers"][0]["resources"]["limits"]
            assert float(limits["nvidia.com/gpu"]) >= m.num_gpus


@pytest.mark.parametrize("dockerfile", sorted(IMAGES))
def test_image_build_files_match_the_ray_pin_and_install_judgefleet(dockerfile):
    text = (REPO / dockerfile).read_text()
    _, extra, flavour = IMAGES[dockerfile]
    (base,) = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert base == f"rayproject/ray:{_pinned_ray()}-py311-{flavour}"
    assert re.search(r'^RUN pip install --no-cache-dir -e "\.\[' + extra + r'\]"$', text, re.M)
    assert extra in _extras()
    assert (REPO / f"{dockerfile}.dockerignore").is_file()
    # The command the image names is the console script pyproject.toml declares.
    cmd = json.loads(re.search(r"^CMD\s+(\[.*\])$", text, re.M)[1])
    scripts = __import__("tomllib").loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert cmd[0] in scripts and scripts[cmd[0]] == "jobs.cli:main"


@pytest.mark.parametrize("manifest", MANIFESTS)
def test_manifests_use_the_built_images_and_the_pinned_ray(manifest):
    doc = yaml.safe_load((REPO / manifest).read_text())
    spec = doc["spec"]
    cluster = spec.get("rayClusterSpec") or spec.get("rayClusterConfig") or (spec if doc["kind"] == "RayCluster" else None)
    if cluster is None:  # a RayJob on the long-lived cluster: its entrypoint is judgefleet's own verb
        argv = shlex.split(spec["entrypoint"])
        assert argv[:2] == ["judgefleet", "score"] and load_config(REPO / argv[2], argv[3:])
        return
    assert cluster["rayVersion"] == _pinned_ray()
    tags = {tag for tag, _, _ in IMAGES.values()}
    pods = [cluster["headGroupSpec"]] + cluster.get("workerGroupSpecs", [])
    for pod in pods:
        for container in pod["template"]["spec"]["containers"]:
            assert container["image"] in tags, (manifest, container["image"])


def _launcher_schema() -> dict:
    ray = pytest.importorskip("ray")
    path = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
    if not path.is_file():
        pytest.skip(f"this ray ({ray.__version__}) ships no autoscaler/ray-schema.json")
    return json.loads(path.read_text())


def test_cluster_launcher_config_satisfies_rays_schema():
    jsonschema = pytest.importorskip("jsonschema")
    doc = yaml.safe_load((REPO / "cluster/mixed-fleet.yaml").read_text())
    jsonschema.validate(doc, _launcher_schema())
    assert doc["head_node_type"] in doc["available_node_types"]


def test_cluster_launcher_nodes_offer_what_the_serve_config_asks_for():
    doc = yaml.safe_load((REPO / "cluster/mixed-fleet.yaml").read_text())
    types = doc["available_node_types"]
    cfg = load_config(REPO / MIXED)
    pin = _pinned_ray()
    assert doc["docker"]["image"] == f"rayproject/ray:{pin}-py311-cpu"
    for m in cfg.serve.models:
        hosts = [name for name, t in types.items()
                 if all(t["resources"].get(r, 0) >= v for r, v in m.resources.items())
                 and t["resources"].get("GPU", 0) >= m.num_gpus and t["resources"].get("CPU", 0) >= m.num_cpus
                 and all(t.get("labels", {}).get(k) == v for k, v in m.labels.items())]
        assert len(hosts) == 1, (m.name, hosts)
        node = types[hosts[0]]
        extra = "gpu" if m.engine == "vllm" else "cpu"
        assert any(f'".[{extra}]"' in c for c in node["worker_setup_commands"]), (m.name, node["worker_setup_commands"])
        if m.engine == "vllm":
            assert node["docker"]["worker_image"] == f"rayproject/ray:{pin}-py311-gpu"
    # judgefleet itself is installed on every node from the synced repository.
    assert doc["file_mounts"]["~/judgefleet"] == "."
    assert any("pip install" in c and "-e ." in c for c in doc["setup_commands"])
    for node in types.values():
        for c in node.get("worker_setup_commands", []):
            assert "cd ~/judgefleet" in c


def test_dev_cluster_script_parses_and_offers_what_the_dev_fleet_config_asks_for():
    """tests/test_ray_job_submit.py runs the script for real; this is the cheap check of its text."""
    import subprocess

    script = REPO / "cluster/dev-cluster.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    usage = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "up|status|env|down" in usage.stderr
    offered = {name for raw in re.findall(r"--resources='(\{.*?\})'", script.read_text()) for name in json.loads(raw)}
    assert "judge_cpu" in offered
    cfg = load_config(REPO / "conf/examples/dev-fleet.yaml")
    for m in cfg.serve.models:
        assert set(m.resources) <= offered, (m.name, m.resources, offered)
        # One replica per judge node: each replica takes a node's whole judge_cpu.
        assert m.resources.get("judge_cpu") == 1
