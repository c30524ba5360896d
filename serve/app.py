"""Builders: a validated `ServeConfig` -> a Ray Serve `Application`.

`build_app` is for Python callers (the judgefleet CLI); `app_builder` is the `import_path` for
`serve run` / `serve deploy` / a RayService, and takes the `args:` of a Serve YAML:

    applications:
      - name: judgefleet
        import_path: serve.app:app_builder
        args: {models: [{id: gemma3-270m, model: "bundled:gemma3-270m-q4_k_m"}]}

One deployment per pool member (placement, replicas and queue bounds from its config; built by
`serve.members`, whatever the engine), and one ingress that routes over them.
"""

from __future__ import annotations

from omegaconf import OmegaConf
from ray.serve import Application

from serve.config import APP_NAME, DEFAULT_PORT, ServeConfig, api_key, validate_serve_config
from serve.ingress import Ingress
from serve.members import member_specs


def build_app(cfg: ServeConfig, app_name: str = APP_NAME) -> Application:
    validate_serve_config(cfg)
    ingress = Ingress.options(num_replicas=cfg.ingress_replicas)
    # A Serve YAML (`serve run`, RayService) that gives no port: where a standing route listens.
    direct = {"host": cfg.host, "port": cfg.port or DEFAULT_PORT} if cfg.front == "direct" else None
    if direct:
        # The listener must be where clients expect it: on the head node, beside the driver.
        ingress = ingress.options(ray_actor_options={"num_cpus": 0, "resources": {"node:__internal_head__": 0.001}})
    return ingress.bind(member_specs(cfg), api_key(cfg.api_key), cfg.retry_after_s, app_name, direct)


def serve_config_from_dict(args: dict) -> ServeConfig:
    """Validate a plain dict (a Serve YAML's `args`) against the schema; unknown keys fail."""
    schema = OmegaConf.structured(ServeConfig)
    merged = OmegaConf.merge(schema, OmegaConf.create(args or {}))
    return OmegaConf.to_object(merged)


def app_builder(args: dict) -> Application:
    args = dict(args or {})
    app_name = args.pop("app_name", APP_NAME)
    return build_app(serve_config_from_dict(args), app_name)
