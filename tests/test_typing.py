"""mypy --strict over the modules in pyproject's [tool.mypy] files (wire format, results, lab scaffold, the
stage Protocols, the pipeline typed against them, and the wiring and runner that hand it each concrete stage,
so every stage class is checked against its Protocol)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_typed_interfaces_pass_mypy_strict(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Success" in proc.stdout
