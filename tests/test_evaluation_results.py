"""Long evaluations: data paths from an option or the environment (never a machine's path), and the JSON of
what they measured is written even when they are interrupted (real child processes, real signals)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from deepz.data_paths import targettrack_dir

TARGETTRACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "targettrack"


def _deepz(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepz", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})  # fmt: skip


def _stderr_reader(proc: subprocess.Popen) -> list[str]:
    """Collect the child's stderr in the background (tqdm rewrites one line with carriage returns)."""
    chunks: list[str] = []
    threading.Thread(target=lambda: chunks.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True).start()
    return chunks


def test_missing_targettrack_data_is_one_line_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "scores.json"
    start = time.perf_counter()
    proc = _deepz("evaluate-tracking", "--json", str(out), "--seconds", "60", env={"DEEPZ_TARGETTRACK": ""})
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert "--targettrack-dir" in err and "DEEPZ_TARGETTRACK" in err and len(err.strip().splitlines()) == 1
    assert not out.exists() and time.perf_counter() - start < 60  # refused before a minute of simulation
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a targettrack data folder"):
        targettrack_dir(tmp_path)


def test_interrupted_evaluation_writes_what_it_has(tmp_path: Path) -> None:
    """SIGTERM (what a process manager sends; Ctrl-C takes the same path) after real-data scores and some
    simulated volumes: the JSON holds both, flagged incomplete."""
    real_data = TARGETTRACK.is_dir()
    out = tmp_path / "scores.json"
    data = ["--targettrack-dir", str(TARGETTRACK)] if real_data else ["--skip-targettrack"]
    env = {"DEEPZ_TARGETTRACK": ""}
    proc = _deepz("evaluate-tracking", "--json", str(out), "--seconds", "600", "--rate", "10", "--planes", "8",
                  *data, env=env)  # fmt: skip
    err = _stderr_reader(proc)
    deadline = time.monotonic() + 120
    # tqdm's "done/total": wait until the simulation has scored two volumes (its counts may skip any number)
    while max((int(n) for n in re.findall(r"(\d+)/6000", "".join(err))), default=0) < 2:
        assert proc.poll() is None and time.monotonic() < deadline, "".join(err)
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) != 0
    result = json.loads(out.read_text())
    assert result["complete"] is False and result["stopped_by"].startswith("interrupted")
    assert result["volumes_done"] >= 2 and result["run"]["seconds"] == 600
    assert ("targettrack" in result) == real_data
    if real_data:
        assert 0 < result["targettrack"]["detection"]["f1"] <= 1
