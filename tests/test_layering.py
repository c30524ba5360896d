"""The seam between serve/ and jobs/ (ARCHITECTURE.md): imports go jobs -> serve only, and jobs/
uses serve/'s public face alone - its settings, the endpoint owner and the wire contract."""

from __future__ import annotations

import ast

from tests.conftest import REPO

PUBLIC = {"serve.config", "serve.endpoint", "serve.wire"}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "serve":  # from serve import wire
                for alias in node.names:
                    yield node.lineno, f"serve.{alias.name}"
            else:
                yield node.lineno, node.module


def _modules(package):
    return sorted((REPO / package).rglob("*.py"))


def test_jobs_uses_only_the_public_face_of_serve():
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in _modules("jobs") for line, name in _imports(p)
           if (name == "serve" or name.startswith("serve.")) and name not in PUBLIC]
    assert not bad, "jobs/ may import from serve/ only " + ", ".join(sorted(PUBLIC)) + ":\n" + "\n".join(bad)


def test_serve_never_imports_jobs():
    bad = [f"{p.relative_to(REPO)}:{line} imports {name}" for p in _modules("serve") for line, name in _imports(p)
           if name == "jobs" or name.startswith("jobs.")]
    assert not bad, "\n".join(bad)


def test_nothing_outside_serve_deploys_the_route():
    """serve.run / serve.start / serve.delete belong to serve.endpoint (tests may shut Serve down)."""
    calls = ("serve.run(", "serve.start(", "serve.delete(", "serve.shutdown(")
    bad = [f"{p.relative_to(REPO)}:{i}" for package in ("jobs", "benchmarks") for p in _modules(package)
           for i, text in enumerate(p.read_text().splitlines(), 1) if any(c in text for c in calls)]
    assert not bad, "deploy through serve.endpoint.JudgeEndpoint instead:\n" + "\n".join(bad)
