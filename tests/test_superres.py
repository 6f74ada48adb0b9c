"""Cross-modality super-resolution: registered simulated pairs, the Richardson-Lucy baseline, training with
the Deep-Z trainer, the model file, evaluation, and the model as a live/replay engine stage."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import zarr

from acquire.sim import SimConfig
from deepz.bench_pipeline import free_tcp_address
from deepz.config import ConfigError, load_config
from deepz.lab.sim_pairs import input_sim_config, render_pairs
from deepz.lab.superres_eval import evaluate_superres
from deepz.runner import run_pipeline
from deepz.training import train
from display.recording import RecordingAdapter
from infer.data import PairConfig
from infer.engine import EngineInputError
from infer.model_io import load_model
from infer.resolution import fwhm_um
from infer.superres.baselines import richardson_lucy
from infer.superres.live import superres_engine_stage
from infer.superres.pairs import PairFileError, SuperResSampler, open_pairs, write_pairs
from infer.train_config import TrainConfig
from storage import RecordingReader

ROOT = Path(__file__).resolve().parents[1]


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sub-pixel (dy, dx) of the cross-correlation peak of a against b (parabolic fit around the peak)."""
    fa, fb = np.fft.fft2(a - a.mean()), np.fft.fft2(b - b.mean())
    cc = np.fft.fftshift(np.real(np.fft.ifft2(fa * np.conj(fb))))
    peak = np.unravel_index(np.argmax(cc), cc.shape)
    out = []
    for axis in (0, 1):
        idx = list(peak)
        vals = []
        for d in (-1, 0, 1):
            idx[axis] = peak[axis] + d
            vals.append(cc[tuple(idx)])
        m, z, p = vals
        out.append(peak[axis] - cc.shape[axis] // 2 + 0.5 * (m - p) / (m - 2 * z + p))
    return np.array(out)


@pytest.mark.parametrize("kind", ["na", "confocal"])
def test_rendered_pairs_are_registered(kind, tmp_path):
    pairs = open_pairs(render_pairs(tmp_path / f"{kind}.zarr", kind=kind, n=1, seed=2, shape=(128, 128),
                                    planes_per_worm=2, progress=False))
    assert pairs.upsample == {"na": 2, "confocal": 1}[kind]
    assert pairs.noisy.shape == (2, 128 // pairs.upsample, 128 // pairs.upsample)
    for i in range(pairs.n):
        shift = _shift(pairs.model_input(i).astype(np.float64), np.asarray(pairs.target[i], np.float64))
        assert np.all(np.abs(shift) < 0.2), shift  # registered to a fifth of a target pixel
    if kind == "na":  # the 10x camera's light is matched to the 20x target's: mean levels agree within 10%
        assert abs(pairs.model_input(0).mean() - np.mean(pairs.target[0])) < 0.1 * np.mean(pairs.target[0])
    assert pairs.psf.shape[0] == pairs.psf.shape[1] and abs(float(pairs.psf.sum()) - 1) < 1e-4


def test_sim_10x_config_is_the_na_pair_input_microscope():
    data = tomllib.loads((ROOT / "configs" / "sim-10x.toml").read_text())
    shipped = SimConfig.model_validate(data)
    derived = input_sim_config(SimConfig(), "na")
    assert shipped.optics == derived.optics and shipped.worm == derived.worm
    assert shipped.camera.background_e == pytest.approx(derived.camera.background_e, rel=1e-12)


def test_richardson_lucy_sharpens_a_blurred_point():
    yy, xx = np.mgrid[-8:9, -8:9]
    psf = np.exp(-(yy**2 + xx**2) / (2 * 2.0**2))
    image = np.zeros((64, 64))
    image[32, 32] = 1000.0
    from scipy.signal import fftconvolve

    blurred = fftconvolve(image, psf / psf.sum(), mode="same")
    restored = richardson_lucy(blurred, psf, 30)
    assert fwhm_um(restored[32], 1.0) < 0.6 * fwhm_um(blurred[32], 1.0)
    assert restored.sum() == pytest.approx(blurred.sum(), rel=1e-3)
    with pytest.raises(ValueError, match="2D image"):
        richardson_lucy(blurred[None], psf)


def _tiny_config(pairs: Path, out: Path, steps: int) -> TrainConfig:
    return TrainConfig.model_validate({
        "name": "superres-tiny", "task": "superres", "out_dir": str(out), "target": "widefield",
        "data": {"stacks": str(pairs), "val_stacks": 2,
                 "simulate_pairs": {"kind": "na", "n": 3, "seed": 7, "shape": [64, 64], "planes_per_worm": 2,
                                    "focus_range_um": 2.0}},
        "pairs": {"crop": 32},
        "model": {"base_channels": 4, "depth": 2, "max_channels": 8, "norm": "none"},
        "train": {"steps": steps, "batch": 4, "lr": 2e-3, "adv_start": steps - 2, "val_every": steps,
                  "checkpoint_every": steps, "threads": 1},
    })


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A tiny super-resolution U-Net trained for 40 steps on CPU by the Deep-Z recipe path (pairs rendered)."""
    out = tmp_path_factory.mktemp("train")
    model_dir = train(_tiny_config(out / "na.zarr", out / "run", 40), progress=False)
    return model_dir, json.loads((out / "run" / "checkpoint" / "state.json").read_text())["history"]


@pytest.fixture(scope="module")
def na_pairs(tiny_model) -> Path:
    """The pairs the tiny model was trained on (rendered by the recipe's simulate_pairs)."""
    return tiny_model[0].parents[1] / "na.zarr"


def test_tiny_superres_model_trains_with_falling_loss(tiny_model):
    _, history = tiny_model
    l1 = np.array([h["l1"] for h in history])
    assert len(l1) == 40 and "adv" in history[-1]  # the discriminator joined for the last steps
    assert l1[-10:].mean() < 0.7 * l1[:5].mean(), (l1[:5], l1[-10:])


def test_superres_model_round_trip(tiny_model, na_pairs):
    model_dir, _ = tiny_model
    loaded = load_model(model_dir)
    m = loaded.manifest
    assert m.task == "superres" and m.modality == "widefield" and m.architecture.in_channels == 2
    assert m.details["upsample"] == 2 and m.details["pair"] == "na"
    assert m.input_optics.numerical_aperture == 0.4 and m.input_optics.pixel_size_um == pytest.approx(0.65)
    assert m.optics.numerical_aperture == 0.75 and m.optics.pixel_size_um == pytest.approx(0.325)
    assert m.axial_range_um == 1.0 and m.training.data_digest == open_pairs(na_pairs).digest
    assert (model_dir / "weights.safetensors").is_file() and not list(model_dir.glob("*.pt*"))


def test_evaluation_scores_every_method_and_beads_show_the_resolution_order(tiny_model, tmp_path):
    beads = render_pairs(tmp_path / "beads.zarr", kind="na", n=1, seed=11, shape=(128, 128), planes_per_worm=2,
                         focus_range_um=1.0, bead_every=1, progress=False)
    results = evaluate_superres(load_model(tiny_model[0]), open_pairs(beads), plots_dir=tmp_path, progress=False)
    methods = results["methods"]
    assert set(methods) == {"network", "bicubic", "richardson_lucy", "target"}
    for name in ("network", "bicubic", "richardson_lucy"):
        assert np.isfinite(methods[name]["psnr"]) and -1 <= methods[name]["ssim"] <= 1
    # bead FWHM: 20x/0.75 NA truth < Richardson-Lucy < bicubic-upsampled 10x/0.4 NA input
    fwhm = {name: methods[name]["fwhm_um_median"] for name in methods}
    assert methods["target"]["fwhm_n"] >= 4 and fwhm["target"] < fwhm["richardson_lucy"] < fwhm["bicubic"], fwhm
    assert 0.3 < fwhm["target"] < 0.7 and fwhm["bicubic"] > 0.8  # Airy 0.51 lambda/NA: 0.35, 0.66 um + pixels
    assert (tmp_path / "superres_example.png").stat().st_size > 10_000


def _run_config(model: Path, out: Path, **inference) -> object:
    return load_config(None, {
        "source": {"sim_config": str(ROOT / "configs" / "sim-10x.toml"), "size": 32, "rate_hz": 20.0,
                   "neurons": 40, "seed": 3},
        "inference": {"model": str(model), "planes": 1, "z_range_um": [-1.0, 1.0], "engine": "torch",
                      **inference},
        "recording": {"out": str(out), "overwrite": True},
        "tracking": {"enabled": False},
        "publish": {"address": free_tcp_address()},
        "duration_s": 1.5,
        "view": False,
    })


def test_live_and_replay_super_resolve_frames_and_keep_the_raw_ones(tiny_model, tmp_path):
    model_dir, _ = tiny_model
    summary = run_pipeline(_run_config(model_dir, tmp_path / "live.zarr"))
    assert summary["volumes"] >= 1 and summary["engine"] == "torch+bicubic-x2"
    live = RecordingReader(tmp_path / "live.zarr")
    assert live.frame_shape == (32, 32) and live.pixel_size_um == pytest.approx(0.65)
    assert live.volume_upsample == 2 and live.volume_pixel_size_um == pytest.approx(0.325)
    t = int(live.volume_indices[0])
    volume = live.volume(t)
    assert volume.shape == (1, 64, 64) and volume.dtype == np.uint16
    stage = superres_engine_stage("torch", load_model(model_dir), (32, 32), 0.65, np.zeros(1), "cpu")
    expected = stage.run(live.frame(t)[None])[0]
    assert np.abs(volume.astype(np.int32) - expected.astype(np.int32)).max() <= 1
    ngff = zarr.open_group(str(tmp_path / "live.zarr"), mode="r")["1"].attrs["ome"]["multiscales"][0]
    scale, shift = (t[k] for t, k in zip(ngff["datasets"][0]["coordinateTransformations"], ("scale", "translation")))
    assert scale[-2:] == pytest.approx([0.325, 0.325]) and shift[-2:] == pytest.approx([-0.1625, -0.1625])
    view = RecordingAdapter(live).state(t)
    assert view.volume_pixel_size_um == pytest.approx(0.325) and view.pixel_size_um == pytest.approx(0.65)
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(str(tmp_path / "live.zarr"))

    replay = run_pipeline(_run_config(model_dir, tmp_path / "replay.zarr"), replay_from=tmp_path / "live.zarr")
    assert replay["volumes"] == live.n_frames
    again = RecordingReader(tmp_path / "replay.zarr")
    assert np.array_equal(again.frame(t), live.frame(t))  # raw frames as acquired, not upsampled
    assert np.abs(again.volume(t).astype(np.int32) - volume.astype(np.int32)).max() <= 1


def test_bad_inputs_give_clear_errors(tiny_model, na_pairs, tmp_path):
    model_dir, _ = tiny_model
    loaded = load_model(model_dir)
    with pytest.raises(EngineInputError, match="one plane at the focus"):
        superres_engine_stage("torch", loaded, (32, 32), 0.65, np.array([-1.0, 0.0, 1.0]), "cpu")
    with pytest.raises(EngineInputError, match="sampled at 0.65 um"):
        superres_engine_stage("torch", loaded, (64, 64), 0.325, np.zeros(1), "cpu")
    with pytest.raises(ConfigError, match="tracking"):
        cfg = _run_config(model_dir, tmp_path / "x.zarr")
        run_pipeline(cfg.model_copy(update={"tracking": cfg.tracking.model_copy(update={"enabled": True})}))
    with pytest.raises(PairFileError, match="not a whole multiple"):
        write_pairs(tmp_path / "bad.zarr", np.zeros((2, 30, 30), np.uint16), np.zeros((2, 64, 64)),
                    pixel_size_um=0.325, offset_adu=100)
    with pytest.raises(PairFileError, match="same N"):
        write_pairs(tmp_path / "bad.zarr", np.zeros((2, 32, 32), np.uint16), np.zeros((3, 64, 64)),
                    pixel_size_um=0.325, offset_adu=100)
    with pytest.raises(PairFileError, match="No pairs"):
        open_pairs(tmp_path / "missing.zarr")
    with pytest.raises(PairFileError, match="confocal"):
        SuperResSampler(open_pairs(na_pairs), PairConfig(crop=32), offset_adu=100, scale_adu=1000,
                        target="confocal")


def test_cli_simulates_pairs_and_scores_a_model_into_its_manifest(tiny_model, tmp_path):
    import shutil

    from typer.testing import CliRunner

    from deepz.cli import app

    model = tmp_path / "model"
    shutil.copytree(tiny_model[0], model)
    runner = CliRunner()
    out = runner.invoke(app, ["simulate", "pairs", "--kind", "na", "--n", "1", "--planes", "1", "--shape", "64",
                              "64", "--seed", "4", "--out", str(tmp_path / "p.zarr")])
    assert out.exit_code == 0, out.output
    result = runner.invoke(app, ["evaluate-superres", str(model), "--pairs", str(tmp_path / "p.zarr"), "--json",
                                 str(tmp_path / "r.json"), "--update-manifest"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "r.json").read_text())
    assert scores["data"]["n_pairs"] == 1 and "richardson_lucy" in result.output
    assert load_model(model).manifest.evaluation["methods"]["network"]["psnr"] == scores["methods"]["network"]["psnr"]
    missing = runner.invoke(app, ["evaluate-superres", str(model)])
    assert missing.exit_code != 0 and "exactly one of --pairs" in missing.output


def test_live_takes_the_simulated_microscope_from_the_command_line(tmp_path):
    from typer.testing import CliRunner

    from deepz.cli import app

    result = CliRunner().invoke(app, ["live", "--sim-config", str(tmp_path / "missing.toml"), "--duration", "1"])
    assert result.exit_code != 0 and "missing.toml does not exist" in result.output
