"""Deployment files that users apply by hand must at least be valid for their consumers."""

import pytest
import yaml

from jobs.config import load_config
from serve.app import serve_config_from_dict
from serve.config import validate_serve_config
from tests.conftest import REPO, SHARED

CRDS = SHARED / "kuberay-crds"


def crd_schema(name: str) -> dict:
    crd = yaml.safe_load((CRDS / name).read_text())
    return next(v for v in crd["spec"]["versions"] if v["name"] == "v1")["schema"]["openAPIV3Schema"]


@pytest.mark.skipif(not CRDS.exists(), reason="../shared/kuberay-crds is not here")
@pytest.mark.parametrize("manifest, crd", [
    ("k8s/rayjob-quickstart.yaml", "ray.io_rayjobs.yaml"),
    ("k8s/rayservice-mixed-fleet.yaml", "ray.io_rayservices.yaml"),
    ("k8s/raycluster-mixed-fleet.yaml", "ray.io_rayclusters.yaml"),
    ("k8s/rayjob-on-cluster.yaml", "ray.io_rayjobs.yaml"),
])
def test_kuberay_manifests_satisfy_their_crd(manifest, crd):
    import jsonschema

    doc = yaml.safe_load((REPO / manifest).read_text())
    jsonschema.validate(doc, crd_schema(crd))
    if doc["kind"] == "RayJob":
        entry = doc["spec"]["entrypoint"].split()
        assert entry[:2] == ["judgefleet", "score"] and (REPO / entry[2]).exists()
        # A job either brings its own cluster or names the long-lived one, which must exist here.
        assert ("rayClusterSpec" in doc["spec"]) != ("clusterSelector" in doc["spec"])
        if "clusterSelector" in doc["spec"]:
            cluster = yaml.safe_load((REPO / "k8s/raycluster-mixed-fleet.yaml").read_text())
            assert doc["spec"]["clusterSelector"]["ray.io/cluster"] == cluster["metadata"]["name"]
    elif doc["kind"] == "RayCluster":
        groups = {g["groupName"]: g for g in doc["spec"]["workerGroupSpecs"]}
        gpu = groups["gpu-judges"]["template"]["spec"]
        assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] and gpu["nodeSelector"] and gpu["tolerations"]
    else:
        # The Serve config inside is one our builder accepts, with one pool of two kinds of members.
        app = yaml.safe_load(doc["spec"]["serveConfigV2"])["applications"][0]
        assert app["import_path"] == "serve.app:app_builder"
        args = dict(app["args"])
        cfg = serve_config_from_dict(args)
        validate_serve_config(cfg)
        assert {m.engine for m in cfg.models} == {"vllm", "llama.cpp"} and len({m.id for m in cfg.models}) == 1
        groups = {g["groupName"]: g["rayStartParams"].get("resources", "") for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]}
        for m in cfg.models:
            (resource,) = m.resources
            assert any(resource in r for r in groups.values()), (resource, groups)


def test_serve_yaml_builds_a_valid_app_config():
    doc = yaml.safe_load((REPO / "conf/serve.yaml").read_text())
    app = doc["applications"][0]
    assert app["import_path"] == "serve.app:app_builder"
    cfg = serve_config_from_dict(app["args"])
    assert cfg.models[0].id == "gemma3-270m"


@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in (REPO / "conf").rglob("*.yaml") if p.name != "serve.yaml"))
def test_every_shipped_job_config_loads(path):
    cfg = load_config(REPO / path)
    assert cfg.judge.model
