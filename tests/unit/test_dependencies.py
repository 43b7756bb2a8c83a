"""Every third-party distribution the code imports is declared in pyproject.toml.

The product, the emulators and the benchmarks need ``[project] dependencies``; the tests may
also use the ``test`` extra. A module imported only through another package's dependency
(``multidict`` through aiohttp, ``pydantic_core`` through pydantic) still has to be declared:
the other package may drop it.
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OURS = {"sidecar", "sidecar_sandbox", "bench", "tests"}


def _declared(*groups: str) -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for g in groups:
        reqs += project["optional-dependencies"][g]
    return {re.match(r"[A-Za-z0-9_.-]+", r).group(0).lower().replace("_", "-") for r in reqs}  # type: ignore[union-attr]


def _imported(folder: str) -> set[str]:
    names: set[str] = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in OURS and n not in sys.stdlib_module_names}


@pytest.mark.parametrize(
    ("folder", "groups"), [("sidecar", ()), ("sidecar_sandbox", ()), ("bench", ()), ("tests", ("test",))]
)
def test_every_imported_distribution_is_declared(folder: str, groups: tuple[str, ...]) -> None:
    dists = packages_distributions()
    declared = _declared(*groups)
    undeclared = {}
    for module in _imported(folder):
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not owners & declared:
            undeclared[module] = sorted(owners)
    assert not undeclared, f"{folder}/ imports undeclared distributions: {undeclared}"
