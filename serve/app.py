"""Builders: a validated `ServeConfig` -> a Ray Serve `Application`.

`build_app` is for Python callers (the judgefleet CLI); `app_builder` is the `import_path` for
`serve run` / `serve deploy` / a RayService, and takes the `args:` of a Serve YAML:

    applications:
      - name: judgefleet
        import_path: serve.app:app_builder
        args: {models: [{id: gemma3-270m, model: "bundled:gemma3-270m-q4_k_m"}]}
"""

from __future__ import annotations

import re
from dataclasses import asdict

from omegaconf import OmegaConf
from ray import serve
from ray.serve import Application

from serve.config import ServeConfig, validate_serve_config
from serve.ingress import Ingress
from serve.model_server import ModelServer

APP_NAME = "judgefleet"


def deployment_name(model_id: str) -> str:
    return "model-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", model_id)


def build_app(cfg: ServeConfig) -> Application:
    validate_serve_config(cfg)
    models = {}
    for m in cfg.models:
        deployment = serve.deployment(ModelServer).options(
            name=deployment_name(m.id),
            num_replicas=m.replicas,
            max_ongoing_requests=m.max_ongoing_requests,
            ray_actor_options={"num_cpus": m.num_cpus},
            health_check_period_s=10,
            health_check_timeout_s=60,
        )
        models[m.id] = deployment.bind(asdict(m))
    return Ingress.bind(models)


def serve_config_from_dict(args: dict) -> ServeConfig:
    """Validate a plain dict (a Serve YAML's `args`) against the schema; unknown keys fail."""
    schema = OmegaConf.structured(ServeConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(args or {}))
    return OmegaConf.to_object(merged)


def app_builder(args: dict) -> Application:
    return build_app(serve_config_from_dict(args))
