"""Resolution measures on images of known blur: decorrelation analysis, FWHM of peaks and of nuclei."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from infer.resolution import decorrelation_resolution_um, fwhm_um, nucleus_fwhm_um

FWHM_PER_SIGMA = 2 * np.sqrt(2 * np.log(2))


def _points_image(sigma: float | tuple[float, float], noise: float, seed: int = 0) -> np.ndarray:
    """Random point emitters blurred by a Gaussian of `sigma` pixels, peak 1, plus white noise."""
    rng = np.random.default_rng(seed)
    base = np.zeros((256, 256))
    yx = rng.integers(0, 256, (600, 2))
    base[yx[:, 0], yx[:, 1]] = 1.0
    image = gaussian_filter(base, sigma)
    return image / image.max() + noise * rng.standard_normal(image.shape)


def test_decorrelation_orders_blur_and_matches_its_width() -> None:
    pixel = 0.1
    sigmas = [1.0, 2.0, 4.0]
    res = [decorrelation_resolution_um(_points_image(s, 0.02), pixel) for s in sigmas]
    assert res[0] < res[1] < res[2]
    for s, r in zip(sigmas, res, strict=True):
        fwhm = FWHM_PER_SIGMA * s * pixel
        assert 0.7 * fwhm < r < 1.6 * fwhm, (s, r, fwhm)


def test_decorrelation_scales_with_pixel_size_and_reads_one_axis() -> None:
    image = _points_image((6.0, 1.5), 0.02)
    coarse, fine = (decorrelation_resolution_um(image, p) for p in (0.2, 0.1))
    assert coarse == pytest.approx(2 * fine)
    along_y = decorrelation_resolution_um(image, 0.1, axis=0)
    along_x = decorrelation_resolution_um(image, 0.1, axis=1)
    assert along_y > 2.5 * along_x  # blur 4x wider along y than along x


def test_decorrelation_finds_nothing_in_pure_noise() -> None:
    noise = np.random.default_rng(1).standard_normal((128, 128))
    assert np.isnan(decorrelation_resolution_um(noise, 0.1))


@pytest.mark.parametrize(
    ("image", "match"),
    [(np.zeros(64), "2D image"), (np.full((32, 32), np.nan), "NaN"), (np.zeros((4, 64)), "8x8")],
)
def test_decorrelation_rejects_bad_images(image: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decorrelation_resolution_um(image, 0.1)


@pytest.mark.parametrize("sigma_px", [1.5, 2.5, 4.0])
@pytest.mark.parametrize("shift_px", [0.0, 0.3, 0.5])
def test_fwhm_of_sampled_gaussian(sigma_px: float, shift_px: float) -> None:
    x = np.arange(41) - 20 - shift_px
    profile = 7.0 + np.exp(-(x**2) / (2 * sigma_px**2))  # background is removed whatever its level
    assert fwhm_um(profile, 0.25) == pytest.approx(FWHM_PER_SIGMA * sigma_px * 0.25, rel=0.03)


def test_fwhm_is_nan_without_a_clean_peak() -> None:
    assert np.isnan(fwhm_um(np.ones(20), 1.0))  # flat
    assert np.isnan(fwhm_um(np.arange(20.0), 1.0))  # monotone: the peak sits on the edge
    one_sided = np.exp(-((np.arange(20) - 2.0) ** 2) / 18)  # half maximum not reached on the left
    assert np.isnan(fwhm_um(one_sided, 1.0))
    assert np.isnan(fwhm_um(np.array([0.0, 1.0, np.nan, 0.0]), 1.0))


def _blobs(shape: tuple[int, ...], centres: np.ndarray, sigma_px: tuple[float, ...]) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float64)
    out = np.zeros(shape)
    for c in centres:
        r2 = sum(((g - ci) / s) ** 2 for g, ci, s in zip(grid, c, sigma_px, strict=True))
        out += np.exp(-r2 / 2)
    return out


def test_nucleus_fwhm_3d_per_axis_and_isolation() -> None:
    spacing = (0.5, 0.2, 0.2)
    sigma_um = (1.5, 0.6, 0.6)
    sigma_px = tuple(s / p for s, p in zip(sigma_um, spacing, strict=True))
    centres = np.array([[12.0, 30.0, 30.0], [12.0, 30.0, 80.0], [12.0, 36.0, 80.0], [np.nan, 0, 0]])
    data = _blobs((25, 60, 110), centres[:3], sigma_px) + 0.1
    out = nucleus_fwhm_um(data, centres, spacing, isolation_um=6.0)
    assert out.shape == (4, 3)
    np.testing.assert_allclose(out[0], FWHM_PER_SIGMA * np.array(sigma_um), rtol=0.05)
    assert np.all(np.isnan(out[1:]))  # nuclei 1 and 2 are 1.2 um apart; row 3 has no centre
    only_z = nucleus_fwhm_um(data, centres[:1], spacing, axes=[0], isolation_um=6.0)
    assert only_z.shape == (1, 1) and only_z[0, 0] == pytest.approx(out[0, 0])


def test_nucleus_fwhm_2d_nan_where_no_peak() -> None:
    centres = np.array([[20.0, 20.0], [20.0, 60.0]])
    data = _blobs((40, 90), centres[:1], (2.0, 3.0))  # no nucleus at the second centre
    out = nucleus_fwhm_um(data, centres, 1.0, isolation_um=15.0)
    np.testing.assert_allclose(out[0], FWHM_PER_SIGMA * np.array([2.0, 3.0]), rtol=0.05)
    assert np.all(np.isnan(out[1]))
    with pytest.raises(ValueError, match="2D or 3D"):
        nucleus_fwhm_um(np.zeros(10), np.zeros((1, 1)), 1.0)
