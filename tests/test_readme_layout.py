"""The README's Layout table names every module of serve/ and jobs/, and only modules that exist."""

from __future__ import annotations

import re

from tests.conftest import REPO


def _layout_rows() -> dict:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].startswith("`"):
            rows[cells[0].strip("`").split("`")[0]] = cells[1]
    return rows


def test_every_module_is_in_its_folders_row_and_every_named_module_exists():
    rows = _layout_rows()
    for package in ("serve", "jobs"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "__init__.py":
                continue
            folder = path.parent.relative_to(REPO).as_posix() + "/"
            row = rows.get(folder) or rows.get(folder.split("/")[0] + "/")  # serve/engines/ lives in serve/'s row
            assert row is not None, f"README Layout has no row for {folder}"
            assert f"`{path.name}`" in row, f"README Layout row {folder} does not name {path.name}"
    for folder, row in rows.items():
        for name in re.findall(r"`([\w.]+\.py)`", row):
            matches = list((REPO / folder).rglob(name)) if (REPO / folder).is_dir() else []
            assert matches, f"README Layout row {folder} names {name}, which is not in {folder}"
