"""Neuron detection on hand-made volumes with known centres; bad inputs give clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from track.detect import DetectConfig, detect_neurons
from track.evaluate import match_points

VOXEL = (0.6, 0.3, 0.3)
CENTRES = np.array([[3.1, 5.05, 6.2], [6.3, 12.4, 10.0], [4.0, 9.0, 15.55]])  # um, (z, y, x)


def blob_volume(
    centres: np.ndarray = CENTRES, shape=(16, 64, 64), sigma_um=0.7, noise=0.0, seed=0
) -> np.ndarray:
    """Gaussian nuclei at exact sub-voxel centres, optional Gaussian noise."""
    grids = np.meshgrid(*[np.arange(n) * v for n, v in zip(shape, VOXEL, strict=True)], indexing="ij")
    vol = np.full(shape, 100.0)
    for c in centres:
        d2 = sum((g - ci) ** 2 for g, ci in zip(grids, c, strict=True))
        vol += 1000.0 * np.exp(-0.5 * d2 / sigma_um**2)
    if noise:
        vol += np.random.default_rng(seed).normal(0, noise, shape)
    return vol.astype(np.float32)


def test_finds_each_blob_at_its_subvoxel_centre():
    det = detect_neurons(blob_volume(noise=3.0), VOXEL)
    assert len(det) == len(CENTRES)
    r, c = match_points(det.positions_um, CENTRES, 0.5)
    assert len(r) == len(CENTRES)
    assert np.abs(det.positions_um[r] - CENTRES[c]).max() < 0.15
    assert np.all(det.intensity > 0)


def test_origin_shifts_positions_and_uint16_and_tensor_inputs_agree():
    vol = blob_volume()
    ref = detect_neurons(vol, VOXEL)
    shifted = detect_neurons(vol.astype(np.uint16), VOXEL, origin_um=(-5.0, 1.0, 2.0))
    as_tensor = detect_neurons(torch.from_numpy(vol), VOXEL)
    np.testing.assert_allclose(shifted.positions_um, ref.positions_um + [-5.0, 1.0, 2.0], atol=1e-3)
    np.testing.assert_allclose(as_tensor.positions_um, ref.positions_um)


def test_close_pair_resolved_and_noise_only_volume_is_empty():
    pair = np.array([[4.0, 9.0, 9.0], [4.0, 9.0, 11.6]])  # 2.6 um apart, touching nuclei
    det = detect_neurons(blob_volume(pair, noise=2.0), VOXEL)
    assert len(det) == 2
    flat = np.random.default_rng(1).normal(100, 3, (16, 64, 64)).astype(np.float32)
    assert len(detect_neurons(flat, VOXEL)) <= 1  # pure noise: at most a stray peak, never a crowd


def test_deterministic():
    vol = blob_volume(noise=5.0)
    a, b = detect_neurons(vol, VOXEL), detect_neurons(vol, VOXEL)
    np.testing.assert_array_equal(a.positions_um, b.positions_um)
    np.testing.assert_array_equal(a.intensity, b.intensity)


def test_explicit_threshold_drops_dim_blobs():
    vol = blob_volume()
    assert len(detect_neurons(vol, VOXEL, config=DetectConfig(threshold=1e6))) == 0


@pytest.mark.parametrize(
    ("volume", "error", "match"),
    [
        (np.zeros((0, 8, 8), np.float32), ValueError, "empty"),
        (np.zeros((8, 8), np.float32), ValueError, r"\(Z, Y, X\)"),
        (np.zeros((2, 8, 8, 8), np.float32), ValueError, r"\(Z, Y, X\)"),
        (np.full((4, 8, 8), np.nan, np.float32), ValueError, "NaN"),
        (np.array([[["a"]]]), TypeError, "numeric"),
    ],
)
def test_bad_volumes_raise_clear_errors(volume, error, match):
    with pytest.raises(error, match=match):
        detect_neurons(volume, VOXEL)


def test_bad_voxel_size():
    with pytest.raises(ValueError, match="voxel_um"):
        detect_neurons(blob_volume(), (0.6, 0.3))
    with pytest.raises(ValueError, match="voxel_um"):
        detect_neurons(blob_volume(), (0.6, -0.3, 0.3))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu():
    vol = blob_volume(noise=3.0)
    cpu = detect_neurons(vol, VOXEL)
    gpu = detect_neurons(vol, VOXEL, device="cuda")
    np.testing.assert_allclose(gpu.positions_um, cpu.positions_um, atol=1e-3)


def test_axial_min_distance_merges_one_nucleus_peaking_twice_along_z_but_not_a_stacked_pair():
    # a wide-field scan blurs a nucleus along z, and its image can peak twice about 1-1.8 um apart; nuclei
    # 2 um or more across lie further apart than that
    twin = np.array([[3.6, 5.0, 6.0], [5.1, 5.1, 6.0]])  # 1.5 um apart along z
    brighter = 0.2 * (blob_volume(twin[:1], sigma_um=0.4) - 100.0)  # the first peak the stronger
    twin_volume = blob_volume(twin, sigma_um=0.4) + brighter
    stacked = np.array([[3.0, 12.0, 12.0], [5.6, 12.3, 12.0]])  # two nuclei 2.6 um apart along z
    volume = twin_volume + blob_volume(stacked, sigma_um=0.7) - 100.0
    isotropic = detect_neurons(volume, VOXEL)
    assert len(isotropic) == 4
    ellipsoid = detect_neurons(volume, VOXEL, config=DetectConfig(axial_min_distance_um=1.9))
    assert len(ellipsoid) == 3
    r, c = match_points(ellipsoid.positions_um, np.concatenate([twin[:1], stacked]), 0.5)
    assert len(r) == 3  # the twin's stronger peak and both stacked nuclei
