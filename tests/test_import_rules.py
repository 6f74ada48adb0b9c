"""The stage rule, read from the source: a stage package imports no other stage and not deepz (only deepz
wires them); the wire format imports neither. Every import counts, also inside functions and TYPE_CHECKING."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("acquire", "infer", "track", "storage", "display")
LEAVES = ("wire",)  # imported by stages and deepz alike, so it may import neither
APPLICATION = "deepz"


def imported_packages(path: Path) -> list[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a module."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def rule_breaks(package: str) -> list[str]:
    """The imports in ``package`` of another stage package or of deepz, as 'file:line: package'."""
    forbidden = {*STAGES, *LEAVES, APPLICATION} - {package}
    if package in STAGES:
        forbidden -= set(LEAVES)
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {name}"
        for path in sorted((ROOT / package).rglob("*.py"))
        for line, name in imported_packages(path)
        if name in forbidden
    ]


@pytest.mark.parametrize("package", STAGES + LEAVES)
def test_package_imports_no_other_stage(package: str) -> None:
    assert (ROOT / package).is_dir()
    assert rule_breaks(package) == []


def test_the_rule_sees_a_cross_stage_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import numpy\n\ndef f():\n    from storage.reader import RecordingReader\n")
    assert imported_packages(module) == [(1, "numpy"), (4, "storage")]
