"""The tree stays as docs/architecture.md draws it: every module of ``sidecar/``,
``sidecar_sandbox/``, ``bench/`` and ``deploy/`` is named in the module map, none is over ~300
lines, and the production package never imports the emulators or the tests."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("sidecar", "sidecar_sandbox", "bench", "deploy")
MAX_LINES = 320  # "about 300": a module that grows past this is split


def modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py") if p.name != "__init__.py")


def module_map() -> str:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("## Module map (as built)", 1)[1]
    return section.split("```", 2)[1]


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_module_is_on_the_map_and_small(path: Path) -> None:
    stem = path.stem
    assert re.search(rf"(?<![\w.]){re.escape(stem)}(\.py)?\b", module_map()), (
        f"{path.relative_to(ROOT)} is not named in docs/architecture.md's module map"
    )
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it (one job per module)"


def test_the_product_never_imports_the_tests() -> None:
    for path in (ROOT / "sidecar").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n == "tests" or n.startswith(("tests.", "bench")) for n in names), path
