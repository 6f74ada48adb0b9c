"""Training: pair sampling from focal stacks, a tiny model whose loss falls, resumable checkpoints, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from infer.data import PairConfig, PairSampler, open_stacks
from infer.model_io import load_model
from deepz.training import train
from infer.train import DataSection, ModelSection, TrainConfig, Trainer, TrainSection
from infer.training_data import stacks_data
from model_synthetic import OFFSET, write_blob_stacks


@pytest.fixture(scope="module")
def stacks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_blob_stacks(tmp_path_factory.mktemp("stacks") / "s.zarr", n=3, shape=(48, 48))


def test_uniform_pairs_take_the_target_from_plane_zi_plus_d(stacks_path: Path) -> None:
    st = open_stacks(stacks_path)
    cfg = PairConfig(crop=48, axial_range_um=2.0, input_z_um=1.0, nonuniform_fraction=0.0, augment=False)
    sampler = PairSampler(st, cfg, offset_adu=OFFSET, scale_adu=500.0, seed=3)
    clean = np.asarray(st.targets["clean"])
    noisy = np.asarray(st.noisy)
    x, y = sampler.sample(16)
    for xi, yi in zip(x, y):
        d = float(xi[1, 0, 0]) * cfg.axial_range_um
        assert np.all(xi[1] == xi[1, 0, 0]) and abs(d) <= 2.0
        image = xi[0] * 500.0 + OFFSET
        n, i = next((n, i) for n in range(st.n) for i in range(len(st.z_um))
                    if np.allclose(noisy[n, i], image, atol=0.01))
        assert abs(st.z_um[i]) <= 1.0
        j = int(np.argmin(np.abs(st.z_um - (st.z_um[i] + d))))
        assert np.allclose(yi[0] * 500.0 + OFFSET, clean[n, j], atol=0.01)


def test_nonuniform_pairs_follow_the_surface_pixel_by_pixel(stacks_path: Path) -> None:
    st = open_stacks(stacks_path)
    cfg = PairConfig(crop=32, axial_range_um=2.0, input_z_um=1.0, nonuniform_fraction=1.0, augment=False)
    sampler = PairSampler(st, cfg, offset_adu=OFFSET, scale_adu=500.0, seed=4)
    x, y = sampler.sample(4)
    dpm = x[:, 1] * cfg.axial_range_um
    assert np.all(np.abs(dpm) <= 2.0 + 1e-6)
    assert np.allclose(dpm * 2, np.round(dpm * 2), atol=1e-5)  # snapped to the 0.5 um plane grid
    assert max(np.ptp(d) for d in dpm) > 0  # surfaces, not constants


def _config(stacks: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig(
        name="tiny", out_dir=str(out), data=DataSection(stacks=str(stacks), val_stacks=1),
        pairs=PairConfig(crop=32, axial_range_um=2.0, input_z_um=1.0),
        model=ModelSection(base_channels=4, depth=2, max_channels=8),
        train=TrainSection(steps=steps, batch=4, lr=3e-3, adv_start=20, val_every=10, checkpoint_every=10, threads=1),
    )


def test_tiny_model_loss_falls_and_training_resumes(stacks_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    model = train(_config(stacks_path, out, 40), progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    l1 = [h["l1"] for h in state["history"]]
    assert np.mean(l1[-8:]) < 0.7 * np.mean(l1[:4])
    assert any("adv" in h for h in state["history"])  # the adversarial loss joined after adv_start
    assert len(state["val_history"]) == 4 and (out / "training_curve.png").stat().st_size > 0
    loaded = load_model(model)
    assert loaded.manifest.training.steps == 40 and loaded.manifest.axial_range_um == 2.0
    train(_config(stacks_path, out, 50), resume=True, progress=False)
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 50 and len(state["history"]) == 50
    assert load_model(out / "model").manifest.training.steps == 50


def test_cli_renders_stacks_with_the_simulator_and_trains(tmp_path: Path) -> None:
    from deepz.cli import app

    runner = CliRunner()
    stacks = tmp_path / "sim.zarr"
    res = runner.invoke(app, ["simulate", "stacks", "--n", "2", "--out", str(stacks), "--shape", "64", "64",
                              "--z-min", "-1", "--z-max", "1", "--seed", "5"])
    assert res.exit_code == 0, res.output
    st = open_stacks(stacks)
    assert st.noisy.shape == (2, 5, 64, 64) and st.positions_um is not None and st.psf is not None
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'name = "cli"\nout_dir = "{tmp_path / "run"}"\n[data]\nstacks = "{stacks}"\nval_stacks = 1\n'
        "[pairs]\ncrop = 32\naxial_range_um = 1.0\ninput_z_um = 0.5\n"
        "[model]\nbase_channels = 4\ndepth = 2\nmax_channels = 8\n"
        "[train]\nsteps = 3\nbatch = 2\nval_every = 3\ncheckpoint_every = 3\nthreads = 1\n"
    )
    res = runner.invoke(app, ["train", "--config", str(recipe)])
    assert res.exit_code == 0, res.output
    assert load_model(tmp_path / "run" / "model").manifest.training.steps == 3


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_real_stacks_from_acquire_stack_give_pairs(tmp_path: Path, suffix: str) -> None:
    from storage.stack_file import save_stack

    stack = (np.random.default_rng(0).poisson(50, (9, 64, 64)) + 100).astype(np.uint16)
    path = save_stack(tmp_path / f"s{suffix}", stack, np.linspace(2, -2, 9), pixel_size_um=0.2)
    st = open_stacks(path)
    assert st.z_um.tolist() == np.linspace(-2, 2, 9).tolist() and st.pixel_size_um == 0.2
    assert np.array_equal(np.asarray(st.noisy)[0, 0], stack[-1])  # sorted by z; noisy planes are the targets
    x, y = PairSampler(st, PairConfig(crop=32, axial_range_um=2.0, input_z_um=1.0), offset_adu=st.offset_adu,
                       scale_adu=100.0).sample(3)
    assert x.shape == (3, 2, 32, 32) and y.shape == (3, 1, 32, 32)


def test_learning_rate_drops_at_the_recipe_steps(stacks_path: Path, tmp_path: Path) -> None:
    config = _config(stacks_path, tmp_path / "run", 6)
    config.train.lr_drops = [(4, 1e-5), (2, 1e-4)]
    assert [config.train.lr_at(s) for s in (0, 1, 2, 3, 4, 100)] == [config.train.lr] * 2 + [1e-4] * 2 + [1e-5] * 2
    trainer = Trainer(config, stacks_data(config, open_stacks(stacks_path), torch.device("cpu")))
    for _ in range(5):
        trainer.train_step()
    assert {g["lr"] for opt in (trainer.opt_g, trainer.opt_d) for g in opt.param_groups} == {1e-5}


def test_gradient_clipping_bounds_the_update_norm(stacks_path: Path, tmp_path: Path) -> None:
    config = _config(stacks_path, tmp_path / "run", 2)
    config.train.grad_clip = 1e-3
    trainer = Trainer(config, stacks_data(config, open_stacks(stacks_path), torch.device("cpu")))
    rec = trainer.train_step()
    grads = [p.grad for p in trainer.g.parameters() if p.grad is not None]
    clipped = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
    assert rec["grad_norm"] > 10 * config.train.grad_clip  # the raw norm is recorded, before clipping
    assert clipped == pytest.approx(config.train.grad_clip, rel=1e-3)
