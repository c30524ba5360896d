"""`judgefleet serve`: the judge route in the foreground, for any OpenAI client, until Ctrl-C."""

from __future__ import annotations

import time

from jobs.commands.common import judge_endpoint
from jobs.config import JobConfig


def run(cfg: JobConfig, console=None) -> None:
    from rich.console import Console

    console = console or Console(stderr=True)
    with judge_endpoint(cfg, deploy=True) as endpoint:
        models = ", ".join(dict.fromkeys(m.id for m in cfg.serve.models))
        console.print(f"[bold green]judge route ready[/] at {endpoint.url} (models: {models}); Ctrl-C stops it")
        while True:
            time.sleep(3600)
