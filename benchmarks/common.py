"""What every benchmark here does alike: a stand-in judge in its own process, and a written report."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator

from jobs.commands.bench import machine_description

REPO = Path(__file__).resolve().parents[1]

__all__ = ["REPO", "machine_description", "stub_judge", "write_report"]


@contextlib.contextmanager
def stub_judge(*args: str) -> Iterator[str]:
    """tests/stub_openai.py in its own process (so it does not share the measured one's cores); its URL."""
    stub = subprocess.Popen([sys.executable, str(REPO / "tests" / "stub_openai.py"), *args], stdout=subprocess.PIPE,
                            text=True)
    try:
        yield json.loads(stub.stdout.readline())["url"]
    finally:
        stub.terminate()
        stub.wait(10)


def write_report(out_dir: Path, name: str, report: dict, markdown: Callable[[dict], str]) -> None:
    """<name>.json (every number) and <name>.md (the table a reader wants) under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(report, indent=2))
    (out_dir / f"{name}.md").write_text(markdown(report))
