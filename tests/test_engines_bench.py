"""`deepz bench infer`: JSON fields, agreement checks and the sweep plot, on a tiny saved model."""

from __future__ import annotations

import json

import pytest
from engines_common import TINY, tiny_model
from typer.testing import CliRunner

from deepz.cli import app
from infer.model import generator_flops_per_plane
from infer.model_io import save_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model = tiny_model()
    return save_model(tmp_path_factory.mktemp("model") / "tiny", model.generator, model.manifest)


def _bench(*args: str) -> None:
    result = CliRunner().invoke(app, ["bench", "infer", "--device", "cpu", "--seconds", "0.2", *args])
    assert result.exit_code == 0, result.output


def test_bench_point_with_checks(model_dir, tmp_path):
    out = tmp_path / "infer.json"
    _bench("--model", str(model_dir), "--size", "32", "--planes", "4", "--batch", "2",
           "--engine", "torch,torch-opt:bfloat16", "--check", "--json", str(out))
    report = json.loads(out.read_text())
    assert report["peak"]["dtype"] == "float32" and report["peak"]["tflops"] > 0
    assert [p["spec"] for p in report["results"]] == ["torch", "torch-opt:bfloat16"]
    assert [p["precision"] for p in report["results"]] == ["float32", "bfloat16"]
    for point in report["results"]:
        assert point["planes_per_s"] == pytest.approx(4 * point["volumes_per_s"])
        assert point["gflop_per_plane"] == pytest.approx(generator_flops_per_plane(TINY, 32, 32) / 1e9)
        assert point["latency_ms"]["p99"] >= point["latency_ms"]["p50"] > 0
        assert 0 < point["peak_fraction"] and point["device_memory_mb"] >= 0
    checks = {c["spec"]: c for c in report["checks"]}
    assert set(checks) == {"torch", "torch-opt:bfloat16"}
    assert set(checks["torch-opt:bfloat16"]["relative_error"]) == {"random", "simulated"}
    assert checks["torch-opt:bfloat16"]["tolerance"] == 1e-2 and checks["torch"]["tolerance"] == 1e-3
    assert all(c["passed"] for c in checks.values())


def test_sweep_writes_json_and_plot(model_dir, tmp_path):
    out = tmp_path / "sweep.json"
    _bench("--model", str(model_dir), "--sweep", "--sizes", "32,64", "--planes-list", "2,3",
           "--engine", "torch-opt", "--warmup", "0", "--json", str(out))
    report = json.loads(out.read_text())
    assert sorted((p["size"], p["planes"]) for p in report["results"]) == [(32, 2), (32, 3), (64, 2), (64, 3)]
    assert out.with_suffix(".png").stat().st_size > 10_000
