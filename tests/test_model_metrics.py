"""Evaluation metrics on hand-made cases with known answers, the Wiener baseline, and a tiny evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from infer.data import open_stacks
from deepz.lab.model_eval import evaluate, wiener_refocus
from infer.manifest import Architecture, ModelManifest, Normalisation
from infer.metrics import match_points, pearson, psnr, ssim
from infer.model import DeepZGenerator, UNetConfig
from infer.model_io import LoadedModel
from model_synthetic import OFFSET, write_blob_stacks


def test_psnr_of_a_known_mse() -> None:
    true = np.zeros((16, 16))
    assert psnr(true + 0.1, true, data_range=1.0) == pytest.approx(20.0)
    assert psnr(true + 2.0, true, data_range=200.0) == pytest.approx(40.0)
    assert psnr(true, true, 1.0) == float("inf")


def test_ssim_and_pearson_known_cases() -> None:
    rng = np.random.default_rng(0)
    a = rng.random((32, 32)).astype(np.float32)
    assert ssim(a, a, 1.0) == pytest.approx(1.0)
    assert ssim(a, rng.random((32, 32)), 1.0) < 0.1
    stack = np.stack([a, a * 0.5])
    per_plane = ssim(stack, np.stack([a, a]), 1.0)
    assert per_plane.shape == (2,) and per_plane[0] == pytest.approx(1.0) and per_plane[1] < 1
    assert pearson(a, 3 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)


def test_matching_tolerances_and_f1() -> None:
    true = np.array([[0, 0, 0], [0, 10, 10], [5, 20, 20], [9, 30, 30]], float)
    found = np.array([
        [1.9, 0, 0],        # 1.9 um axial: match
        [0, 11.4, 10],      # 1.4 um lateral: match
        [7.1, 20, 20],      # 2.1 um axial: miss
        [9, 31.6, 30],      # 1.6 um lateral: miss
        [0.1, 0.1, 0],      # second claim on neuron 0: false positive
    ])
    m = match_points(found, true, lateral_um=1.5, axial_um=2.0)
    assert len(m.pairs) == 2
    assert m.precision == pytest.approx(2 / 5) and m.recall == pytest.approx(2 / 4)
    assert m.f1 == pytest.approx(2 * 2 / 9)
    assert sorted(np.abs(m.axial_error_um).round(2).tolist()) == [0.0, 0.1]  # best one-to-one assignment
    assert match_points(np.zeros((0, 3)), true).f1 == 0.0


def test_wiener_with_a_delta_psf_is_the_identity() -> None:
    img = np.random.default_rng(1).random((40, 40)).astype(np.float32)
    delta = np.zeros((5, 5), np.float32)
    delta[2, 2] = 1
    assert np.allclose(wiener_refocus(img, delta, delta, 1e-9), img, atol=1e-4)


def test_evaluation_reports_distances_baselines_and_neurons(tmp_path: Path) -> None:
    path = write_blob_stacks(tmp_path / "s.zarr", n=1, shape=(48, 48), z_um=np.arange(-2, 2.01, 0.5))
    stacks = open_stacks(path)
    cfg = UNetConfig(base_channels=4, depth=2, max_channels=8)
    manifest = ModelManifest(name="t", architecture=Architecture.from_config(cfg),
                             normalisation=Normalisation(offset_adu=OFFSET, scale_adu=800.0),
                             axial_range_um=2.0, axial_step_um=0.5)
    torch.manual_seed(0)
    loaded = LoadedModel(DeepZGenerator(cfg).eval(), manifest, "0" * 64)
    truth = stacks.positions_um[0]

    def oracle_detector(volume: np.ndarray, voxel: tuple[float, float, float]) -> np.ndarray:
        return truth - np.array([-2.0, 0, 0])  # perfect detections, in volume coordinates

    res = evaluate(loaded, stacks, detector=oracle_detector, fov_margin_um=0.0, plots_dir=tmp_path / "plots")
    pd = res["per_distance"]
    assert pd["dz_um"] == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    assert set(pd["psnr"]) == {"deepz", "input"}  # no PSF stored: no Wiener baseline
    assert pd["ssim"]["input"][4] > pd["ssim"]["input"][0]  # the unrefocused input is best at dz = 0
    assert res["neurons"]["deepz"]["f1"] == pytest.approx(1.0)
    assert res["neurons"]["deepz"]["axial_error_median_um"] == pytest.approx(0.0, abs=1e-5)
    assert (tmp_path / "plots" / "metrics_vs_dz.png").stat().st_size > 0
