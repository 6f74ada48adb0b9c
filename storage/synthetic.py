"""Realistic test content for storage: smooth fluorescent blobs on a background with Poisson noise."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

CONTENT_DESCRIPTION = (
    "synthetic fluorescence: ~150 Gaussian blobs (sigma 2-3 px) over a 100 ADU offset + 20 ADU background, "
    "Poisson shot noise, uint16; generated with numpy/scipy"
)


def blob_volume(shape: tuple[int, ...], *, n_blobs: int = 150, seed: int = 0) -> np.ndarray:
    """A uint16 image or volume of Poisson-noisy smooth blobs, so compression ratios are realistic."""
    rng = np.random.default_rng(seed)
    peaks = np.zeros(shape, np.float32)
    index = tuple(rng.integers(0, n, n_blobs) for n in shape)
    np.add.at(peaks, index, rng.uniform(2e4, 8e4, n_blobs).astype(np.float32))
    sigma = (1.5,) * (len(shape) - 2) + (2.5, 2.5)
    expected = gaussian_filter(peaks, sigma) + 20.0
    return (rng.poisson(expected) + 100).astype(np.uint16)
