"""The GPU recipe end to end on the CPU (worms rendered on the fly, GAN, export, held-out evaluation in the
manifest), and `deepz bench train` writing its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from deepz.cli import app
from infer.model_io import load_manifest

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "train-gpu.toml"
TINY = ["data.render.shape=[64, 64]", "data.render.resident=2", "data.render.val_worms=1",
        "data.render.layout_workers=0", "data.render.z_min_um=-3.0", "data.render.z_max_um=3.0",
        "pairs.crop=32", "pairs.axial_range_um=2.0", "pairs.input_z_um=1.0", "train.batch=2",
        "model.base_channels=4", "model.max_channels=16", "train.threads=1"]


def _set(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def test_the_gpu_recipe_trains_on_rendered_worms_and_stores_its_held_out_evaluation(tmp_path: Path) -> None:
    def run(steps: int, *extra: str) -> dict:
        res = CliRunner().invoke(app, ["train", "--config", str(RECIPE), "--device", "cpu", "--steps", str(steps),
                                       "--out-dir", str(tmp_path / "run"),
                                       *_set(TINY + [f'export_dir="{tmp_path / "export"}"', "train.adv_start=1",
                                                     "data.render.layout_workers=1", "evaluate.n=1",
                                                     "evaluate.shape=[64, 64]"]), *extra])
        assert res.exit_code == 0, res.output
        return json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())

    state = run(3)
    assert state["device"] == "cpu" and state["stream"]["next_worm"] == 1 + 2 + 1  # worm 3 replaced worm 1
    assert any("adv" in h for h in state["history"])  # the GAN term joined
    # the stream goes on with fresh worms after the ones it had (its layouts now drawn in-process)
    state = run(5, "--resume", "--set", "data.render.layout_workers=0")
    assert state["step"] == 5 and len(state["history"]) == 5 and state["stream"]["next_worm"] == 1 + 2 + 2
    for folder in (tmp_path / "run" / "model", tmp_path / "export"):
        manifest = load_manifest(folder)
        assert manifest.training.steps == 5 and manifest.training.device == "cpu"
        assert manifest.evaluation["command"]["seed"] == 7 and "deepz" in manifest.evaluation["neurons"]
        assert len(manifest.evaluation["per_distance"]["dz_um"]) == 9  # +/-2 um at 0.5 um


def test_bench_train_writes_full_and_premade_step_rates(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "train", "--json", str(out), "--device", "cpu", "--steps", "1",
                                   "--warmup", "0", "--recipe", str(RECIPE), "--model", "4x2x16", "--model", "8x3x32",
                                   *_set(TINY)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["complete"] is True
    models = report["devices"]["cpu"]["models"]
    assert [(m["model"]["base_channels"], m["model"]["depth"]) for m in models] == [(4, 2), (8, 3)]
    for m in models:
        assert m["full_steps_per_s"] > 0 and m["random_steps_per_s"] > 0
        assert abs(m["ratio_full_to_random"] - m["full_steps_per_s"] / m["random_steps_per_s"]) < 0.01
        assert m["full_pixels_per_s"] > 0 and m["draw_ms_per_batch"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_train_refuses_a_missing_gpu_in_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["train", "--config", str(RECIPE), "--device", "cuda", "--steps", "1",
                                   "--out-dir", str(tmp_path / "run")])
    assert res.exit_code == 2 and "CUDA" in res.output
