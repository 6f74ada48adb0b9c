"""The installable package: a wheel built from the source tree, installed alone into a fresh folder, runs
`deepz --version` and a short `deepz live --config demo` outside the repository (shipped configs and model),
with the rig camera flags (ROI, exposure, buffer) reaching the recording."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest

from deepz.bench_pipeline import free_tcp_address
from storage import RecordingReader

ROOT = Path(__file__).resolve().parents[1]
FIND = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
PACKAGES = [pattern.rstrip("*") for pattern in FIND["include"]]  # the wheel's top-level packages


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built (no isolation, no dependencies) from a copy of the sources, so the tree stays clean."""
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools (the build backend) is not installed, so no wheel can be built here")
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc", "*.onnx", "*.engine")
    for package in PACKAGES:
        if (ROOT / package).is_dir():
            shutil.copytree(ROOT / package, src / package, ignore=skip)
    dist = tmp_path_factory.mktemp("dist")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-2000:]
    (path,) = dist.glob("deepz_live-*.whl")
    return path


def test_the_wheel_holds_the_configs_and_models(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"deepz/configs/demo.toml", "deepz/configs/superres-live.toml", "deepz/configs/sim-10x.toml",
            "deepz/configs/sim.cfg", "infer/models/default/weights.safetensors",
            "infer/models/default/manifest.json", "infer/models/superres-na/manifest.json"} <= names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_runs_live_demo_outside_the_repo(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-2000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target), "QT_QPA_PLATFORM": "offscreen"}
    where = subprocess.run([sys.executable, "-c", "import deepz, infer; print(deepz.__file__, infer.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert where.returncode == 0 and all(p.startswith(str(target)) for p in where.stdout.split()), where
    deepz = target / "bin" / "deepz"
    version = subprocess.run([str(deepz), "--version"], cwd=work, env=env, capture_output=True, text=True,
                             timeout=60)  # fmt: skip
    assert version.returncode == 0 and version.stdout.startswith("deepz-live "), version
    live = subprocess.run(  # the demo config, lightened for a shared CI machine, with the rig camera flags
        [str(deepz), "live", "--config", "demo", "--duration", "2", "--out", "X.zarr", "--no-view",
         "--size", "64", "--planes", "4", "--engine", "torch", "--publish", free_tcp_address(),
         "--roi", "8", "16", "48", "32", "--exposure", "5", "--buffer-mb", "8"],
        cwd=work, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert live.returncode == 0, live.stderr[-3000:]
    reader = RecordingReader(work / "X.zarr")
    assert reader.n_frames >= 50  # 2 s at the demo's 100 Hz, whatever the CPU load
    assert reader.frames.shape[1:] == (32, 48)  # the camera's ROI
    assert set(np.asarray(reader.metadata["exposure_ms"][: reader.n_frames])) == {5.0}
