"""Builders: a validated `ServeConfig` -> a Ray Serve `Application`.

`build_app` is for Python callers (the judgefleet CLI); `app_builder` is the `import_path` for
`serve run` / `serve deploy` / a RayService, and takes the `args:` of a Serve YAML:

    applications:
      - name: judgefleet
        import_path: serve.app:app_builder
        args: {models: [{id: gemma3-270m, model: "bundled:gemma3-270m-q4_k_m"}]}

One deployment per pool member (placement, replicas and queue bounds from its config), and one
ingress that routes over them.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict
from typing import Any, Dict

from omegaconf import OmegaConf
from ray import serve
from ray.serve import Application

from serve.config import ModelConfig, ServeConfig, member_names, validate_serve_config
from serve.ingress import Ingress
from serve.model_server import ModelServer

APP_NAME = "judgefleet"


def deployment_name(model_id: str, member: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{model_id}--{member}")


def api_key(cfg: ServeConfig):
    return cfg.api_key or os.environ.get("JUDGEFLEET_API_KEY") or None


def deployment_options(m: ModelConfig, name: str) -> Dict[str, Any]:
    options: Dict[str, Any] = {
        "name": name,
        "max_ongoing_requests": m.max_ongoing_requests,
        "max_queued_requests": m.max_queued_requests,
        "health_check_period_s": 10,
        "health_check_timeout_s": 60,
    }
    if m.autoscaling is not None:
        options["autoscaling_config"] = {
            "min_replicas": m.autoscaling.min_replicas,
            "max_replicas": m.autoscaling.max_replicas,
            "target_ongoing_requests": m.autoscaling.target_ongoing_requests,
        }
    else:
        options["num_replicas"] = m.replicas
    return options


def actor_options(m: ModelConfig) -> Dict[str, Any]:
    options: Dict[str, Any] = {"num_cpus": m.num_cpus}
    if m.num_gpus:
        options["num_gpus"] = m.num_gpus
    if m.resources:
        options["resources"] = dict(m.resources)
    if m.accelerator_type:
        options["accelerator_type"] = m.accelerator_type
    if m.labels:
        options["label_selector"] = dict(m.labels)
    if m.env:
        options["runtime_env"] = {"env_vars": dict(m.env)}
    return options


def build_app(cfg: ServeConfig, app_name: str = APP_NAME) -> Application:
    validate_serve_config(cfg)
    pools: Dict[str, list] = {}
    for m, member in zip(cfg.models, member_names(cfg)):
        name = deployment_name(m.id, member)
        options = deployment_options(m, name)
        upstream = None
        if m.engine == "openai":  # no deployment: the ingress calls the upstream itself
            bound, name = None, None
            upstream = {"url": m.model, "upstream_model": m.engine_kwargs.get("model"),
                        "api_key_env": m.engine_kwargs.get("api_key_env")}
        elif m.engine == "vllm":
            from serve.engines.vllm import build_member

            bound = build_member(m, member, name, options)
        else:
            bound = serve.deployment(ModelServer).options(ray_actor_options=actor_options(m), **options).bind(
                asdict(m), member
            )
        replicas = m.autoscaling.min_replicas if m.autoscaling else m.replicas
        pools.setdefault(m.id, []).append(
            {
                "name": member,
                "engine": m.engine,
                "handle": bound,
                "deployment": name,
                "max_ongoing": m.max_ongoing_requests,
                "max_queued": m.max_queued_requests,
                "replicas": max(replicas, 1),
                "context_length": m.context_length,
                "upstream": upstream,
            }
        )
    ingress = Ingress.options(num_replicas=cfg.ingress_replicas)
    direct = {"host": cfg.host, "port": cfg.port} if cfg.front == "direct" else None
    if direct:
        # The listener must be where clients expect it: on the head node, beside the driver.
        ingress = ingress.options(ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}})
    return ingress.bind(pools, api_key(cfg), cfg.retry_after_s, app_name, direct)


def serve_config_from_dict(args: dict) -> ServeConfig:
    """Validate a plain dict (a Serve YAML's `args`) against the schema; unknown keys fail."""
    schema = OmegaConf.structured(ServeConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(args or {}))
    return OmegaConf.to_object(merged)


def app_builder(args: dict) -> Application:
    args = dict(args or {})
    app_name = args.pop("app_name", APP_NAME)
    return build_app(serve_config_from_dict(args), app_name)
