"""requirements.txt lists exactly the libraries the collection's plugins import on the managed hosts."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The distribution that provides an import name, where the two differ.
DISTRIBUTIONS = {"psycopg2": "psycopg2-binary"}


def imported_libraries() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "plugins").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found.update(name.split(".", 1)[0] for name in names)
    return {
        name for name in found if name not in sys.stdlib_module_names and name not in ("ansible", "ansible_collections")
    }


def required_distributions() -> set[str]:
    lines = (ROOT / "requirements.txt").read_text().splitlines()
    return {
        re.split(r"[<>=!~\[; ]", line.strip(), maxsplit=1)[0]
        for line in lines
        if line.strip() and not line.startswith("#")
    }


def test_requirements_are_what_the_plugins_import() -> None:
    assert {DISTRIBUTIONS.get(name, name) for name in imported_libraries()} == required_distributions()
