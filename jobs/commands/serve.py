"""`judgefleet serve`: the judge route in the foreground, for any OpenAI client, until Ctrl-C."""

from __future__ import annotations

import time

from jobs import endpoint as ep
from jobs.config import JobConfig


def run(cfg: JobConfig, console=None) -> None:
    from rich.console import Console

    console = console or Console(stderr=True)
    ep.check_port_free(cfg.serve.host, cfg.serve.port)
    started_ray = ep.connect_ray(cfg)
    try:
        endpoint = ep.deploy_route(cfg)
        models = ", ".join(m.id for m in cfg.serve.models)
        console.print(f"[bold green]judge route ready[/] at {endpoint.url} (models: {models}); Ctrl-C stops it")
        while True:
            time.sleep(3600)
    finally:
        ep.remove_route()
        if started_ray:
            import ray

            ray.shutdown()
