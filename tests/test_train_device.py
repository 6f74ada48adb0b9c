"""Training on a device: the batched device sampler against the numpy sampler, the library entry, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from infer.data import FocalStacks, PairConfig, PairSampler, open_stacks
from infer.device import DevicePlan
from infer.device_sampler import DevicePairSampler, DeviceStacks
from infer.model_io import load_model
from deepz.training import train_model
from infer.train import DataSection, ModelSection, TrainConfig, Trainer, TrainSection
from infer.training_data import stacks_data
from model_synthetic import OFFSET, write_blob_stacks

Z = np.arange(-4.0, 4.01, 0.5, dtype=np.float32)
CODE = 16.0  # plane k of stack n holds the value CODE * k + n everywhere (+ a position code, see _coded)


def _coded(n: int = 3, size: int = 40) -> FocalStacks:
    """Stacks whose every pixel says where it comes from: value = position code + 4096 * (CODE * plane + stack)."""
    pos = np.arange(size * size, dtype=np.float64).reshape(size, size)
    plane = CODE * np.arange(len(Z))[None, :, None, None] + np.arange(n)[:, None, None, None]
    data = (pos[None, None] + 4096 * plane).astype(np.float64)
    return FocalStacks(noisy=data, targets={"clean": data}, z_um=Z, pixel_size_um=0.325, offset_adu=0.0)


def _decode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(position code, plane, stack) of coded pixel values."""
    code = np.rint(values).astype(np.int64)
    plane_code = code // 4096
    return code % 4096, plane_code // int(CODE), plane_code % int(CODE)


def _numpy_pairs(st: FocalStacks, cfg: PairConfig, n: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    return PairSampler(st, cfg, seed=1, **kw).sample(n)


def _device_pairs(st: FocalStacks, cfg: PairConfig, n: int, **kw) -> tuple[np.ndarray, np.ndarray]:
    dev = DeviceStacks.from_arrays(np.asarray(st.noisy), np.asarray(st.targets["clean"]), st.z_um, st.pixel_size_um,
                                   torch.device("cpu"))
    x, y = DevicePairSampler(dev, cfg, seed=1, **kw).sample(n)
    return x.numpy().astype(np.float64), y.numpy().astype(np.float64)


def test_device_pairs_take_input_z_i_and_target_z_i_plus_dpm_pixel_by_pixel() -> None:
    st = _coded()
    cfg = PairConfig(crop=16, axial_range_um=2.0, input_z_um=1.0, nonuniform_fraction=0.5, augment=True)
    x, y = _device_pairs(st, cfg, 64, offset_adu=0.0, scale_adu=1.0)
    pos_in, plane_in, stack_in = _decode(x[:, 0])
    pos_out, plane_out, stack_out = _decode(y[:, 0])
    assert np.all(plane_in == plane_in[:, :1, :1]) and np.all(np.abs(Z[plane_in]) <= 1.0)  # one input plane
    assert np.array_equal(stack_in, stack_out)  # the same stack
    assert np.array_equal(pos_in, pos_out)  # the same crop, rotated/flipped together
    dpm = x[:, 1] * cfg.axial_range_um
    assert np.allclose(Z[plane_out] - Z[plane_in], dpm, atol=1e-5)  # the target plane is z_i + DPM, per pixel
    assert np.all(np.abs(dpm) <= 2.0 + 1e-6)
    assert any(np.ptp(d) > 0 for d in dpm) and any(np.ptp(d) == 0 for d in dpm)  # surfaces and constants
    rows, cols = np.divmod(pos_in[:, [0, 0, -1], [0, -1, 0]], 40)  # source of three output corners
    layouts = {tuple(np.concatenate([r - r.min(), c - c.min()])) for r, c in zip(rows, cols)}
    assert len(layouts) == 8  # all eight rotations/flips occur


def test_device_sampler_draws_the_numpy_samplers_plane_pairs() -> None:
    st = _coded(size=24)
    cfg = PairConfig(crop=16, axial_range_um=2.0, input_z_um=1.0, nonuniform_fraction=0.3)
    norm = dict(offset_adu=0.0, scale_adu=1.0)
    stats = []
    for draw in (_numpy_pairs, _device_pairs):
        x, y = draw(st, cfg, 4000, **norm)
        _, plane_in, stack = _decode(x[:, 0, 0, 0])
        dpm = x[:, 1] * cfg.axial_range_um
        uniform = np.ptp(dpm, axis=(1, 2)) == 0
        d = dpm[uniform, 0, 0]
        stats.append({
            "inputs": np.bincount(plane_in, minlength=len(Z)) / len(x),
            "stacks": np.bincount(stack, minlength=3) / len(x),
            "dz": np.bincount(np.rint((d + 2) * 2).astype(int), minlength=9) / len(d),
            "nonuniform": 1 - uniform.mean(),
            "surface": (dpm[~uniform].mean(), dpm[~uniform].std(), np.ptp(dpm[~uniform], axis=(1, 2)).mean()),
        })
    a, b = stats
    for key in ("inputs", "stacks", "dz"):
        assert 0.5 * np.abs(a[key] - b[key]).sum() < 0.06, key  # total variation distance of the histograms
    assert abs(a["nonuniform"] - b["nonuniform"]) < 0.05
    assert np.allclose(a["surface"], b["surface"], atol=0.15)


def test_device_crops_match_numpy_crop_statistics_on_the_same_stacks(tmp_path: Path) -> None:
    st = open_stacks(write_blob_stacks(tmp_path / "s.zarr", n=3, shape=(48, 48)))
    cfg = PairConfig(crop=32, axial_range_um=2.0, input_z_um=1.0)
    norm = dict(offset_adu=OFFSET, scale_adu=500.0)
    (xn, yn), (xd, yd) = (draw(st, cfg, 600, **norm) for draw in (_numpy_pairs, _device_pairs))
    for a, b in ((xn[:, 0], xd[:, 0]), (yn, yd)):
        assert b.mean() == pytest.approx(a.mean(), rel=0.08)
        assert b.std() == pytest.approx(a.std(), rel=0.08)
    assert xd[:, 1].std() == pytest.approx(xn[:, 1].std(), rel=0.08)
    assert abs(xd[:, 1].mean() - xn[:, 1].mean()) < 0.05


def _config(stacks: Path, out: Path, steps: int, **train) -> TrainConfig:
    return TrainConfig(
        name="tiny", out_dir=str(out), data=DataSection(stacks=str(stacks), val_stacks=1),
        pairs=PairConfig(crop=32, axial_range_um=2.0, input_z_um=1.0),
        model=ModelSection(base_channels=4, depth=2, max_channels=8),
        train=TrainSection(**{"steps": steps, "batch": 4, "lr": 3e-3, "adv_start": 2, "val_every": 50,
                              "checkpoint_every": 3, "threads": 1} | train),
    )


@pytest.fixture(scope="module")
def stacks_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_blob_stacks(tmp_path_factory.mktemp("stacks") / "s.zarr", n=3, shape=(48, 48))


def test_train_model_fine_tunes_on_given_focal_stacks(stacks_path: Path, tmp_path: Path) -> None:
    """The library entry a specimen calibration calls: the recipe's schedule on the stacks it hands over."""
    given = open_stacks(stacks_path)
    config = _config(Path("not-used.zarr"), tmp_path / "run", 24, lr_drops=[(16, 1e-3)], checkpoint_every=24)
    model = train_model(config, device="cpu", data=given, progress=False)
    state = json.loads((tmp_path / "run" / "checkpoint" / "state.json").read_text())
    l1 = [h["l1"] for h in state["history"]]
    assert np.mean(l1[-6:]) < 0.7 * np.mean(l1[:3])
    assert state["device"] == "cpu" and state["data_digest"] == given.digest
    assert json.loads((model / "manifest.json").read_text())["training"]["device"] == "cpu"


def test_the_cuda_plan_bf16_autocast_channels_last_fused_adam_trains_and_exports(stacks_path: Path,
                                                                               tmp_path: Path) -> None:
    """What CUDA switches on, run here on the CPU: the losses stay finite and float32, the export loads."""
    config = _config(stacks_path, tmp_path / "run", 3)
    plan = DevicePlan(device=torch.device("cpu"), autocast_dtype=torch.bfloat16, channels_last=True,
                      fused_optimizer=True)
    trainer = Trainer(config, stacks_data(config, open_stacks(stacks_path), plan.device), plan)
    assert trainer.g.inc[0].weight.is_contiguous(memory_format=torch.channels_last)
    records = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(v) for r in records for v in r.values()) and "loss_d" in records[-1]
    assert trainer.opt_g.defaults["fused"] and all(p.dtype == torch.float32 for p in trainer.g.parameters())
    trainer.save_checkpoint()
    assert load_model(tmp_path / "run" / "model").manifest.training.steps == 3


def _history_after_resume(config: TrainConfig, first: str, second: str) -> tuple[list[dict], list[dict]]:
    """Losses of one run to `steps`, and of the same run stopped at 3 on `first` and resumed on `second`."""
    straight = config.model_copy(update={"out_dir": config.out_dir + "-straight"})
    train_model(straight, device=second, progress=False)
    full = json.loads((Path(straight.out_dir) / "checkpoint" / "state.json").read_text())["history"]
    stopped = config.model_copy(update={"train": config.train.model_copy(update={"steps": 3})})
    train_model(stopped, device=first, progress=False)
    train_model(config, device=second, resume=True, progress=False)
    resumed = json.loads((Path(config.out_dir) / "checkpoint" / "state.json").read_text())["history"]
    return full, resumed


def test_a_resumed_run_continues_exactly_where_it_stopped(stacks_path: Path, tmp_path: Path) -> None:
    """Weights, optimiser moments and the sampler's draws are restored through the host (map_location) path."""
    full, resumed = _history_after_resume(_config(stacks_path, tmp_path / "run", 6), "cpu", "cpu")
    assert [h["step"] for h in resumed] == list(range(6))
    for a, b in zip(full[3:], resumed[3:]):
        assert b["l1"] == pytest.approx(a["l1"], rel=1e-5) and b["loss_d"] == pytest.approx(a["loss_d"], rel=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize(("first", "second"), [("cuda", "cpu"), ("cpu", "cuda")])
def test_a_checkpoint_resumes_on_the_other_device(stacks_path: Path, tmp_path: Path, first: str, second: str) -> None:
    full, resumed = _history_after_resume(_config(stacks_path, tmp_path / "run", 6), first, second)
    assert [h["step"] for h in resumed] == list(range(6))
    # the same draws and weights; CUDA computes in bf16, so the losses agree only roughly
    for a, b in zip(full[3:], resumed[3:]):
        assert b["l1"] == pytest.approx(a["l1"], rel=0.1)
