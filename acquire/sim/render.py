"""Image formation: stamps added at nucleus positions, then the camera (shot noise, gain, read noise, ADC)."""

from __future__ import annotations

import numpy as np
import torch

from acquire.sim.config import CameraConfig
from acquire.sim.optics import StampBank

ADC_MAX = 65535


def _subpixel(stamps: np.ndarray, frac: np.ndarray, electrons: np.ndarray) -> np.ndarray:
    """(k, n, n) stamps scaled by ``electrons`` (k,), shifted by ``frac`` (k, 2) in [0, 1) px: (k, n+1, n+1).

    Bilinear, so the flux is kept.
    """
    k, n, _ = stamps.shape
    fy, fx = frac[:, 0, None, None], frac[:, 1, None, None]
    rows = np.empty((k, n, n + 1), np.float32)
    np.multiply(stamps, 1 - fx, out=rows[:, :, :n])
    rows[:, :, n] = 0
    rows[:, :, 1:] += stamps * fx
    scale = electrons.astype(np.float32)[:, None, None]
    out = np.empty((k, n + 1, n + 1), np.float32)
    np.multiply(rows, scale * (1 - fy), out=out[:, :n])
    out[:, n] = 0
    out[:, 1:] += rows * (scale * fy)
    return out


def add_stamps(
    image: np.ndarray,
    bank: StampBank,
    pos_px: np.ndarray,
    defocus_um: np.ndarray,
    size_class: np.ndarray,
    electrons: np.ndarray,
) -> np.ndarray:
    """Add each nucleus (row, col) its stamp scaled by its electrons into ``image`` (float32, in place).

    Every stamp is placed with sub-pixel precision, so an image moves as continuously as its nucleus. (Broad,
    defocused stamps once went to the nearest pixel: their sharp defocus rings then jumped by a pixel as a
    nucleus crossed a pixel border, which no camera does; a demixing fit with the simulator's own radial
    stamps at the true positions read neurons 4-6 um from focus at trace r 0.86 instead of 0.96.) The shifts
    are computed in batches of nuclei whose stamps have one size: one nucleus at a time, they held a 512x512
    camera below 100 Hz.
    """
    h, w = image.shape
    planes = bank.plane_index(defocus_um).tolist()
    stamps = [bank.stamps[c][j] for c, j in zip(np.asarray(size_class).tolist(), planes)]
    sizes = np.array([s.shape[0] for s in stamps])
    origin = np.floor(pos_px)
    frac = (pos_px - origin).astype(np.float32)
    top_left = origin.astype(np.int64) - sizes[:, None] // 2
    bottom_right = top_left + sizes[:, None] + 1  # a shifted stamp is one pixel wider
    visible = (bottom_right > 0).all(1) & (top_left[:, 0] < h) & (top_left[:, 1] < w)
    electrons = np.asarray(electrons)
    for n in np.unique(sizes[visible]).tolist():
        group = np.flatnonzero(visible & (sizes == n))
        patches = _subpixel(np.stack([stamps[i] for i in group]), frac[group], electrons[group])
        for (y0, x0), (y1, x1), patch in zip(top_left[group].tolist(), bottom_right[group].tolist(), patches):
            if y0 >= 0 and x0 >= 0 and y1 <= h and x1 <= w:
                image[y0:y1, x0:x1] += patch
            else:
                image[max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)] += patch[
                    max(0, -y0) : n + 1 - max(0, y1 - h), max(0, -x0) : n + 1 - max(0, x1 - w)
                ]
    return image


class Camera:
    """Turns an expected photo-electron image into ADU: Poisson shot noise, read noise, gain, offset, clip."""

    def __init__(self, config: CameraConfig) -> None:
        self.config = config

    def expected_adu(self, electrons: np.ndarray) -> np.ndarray:
        """Noise-free mean ADU image (offset included), float32."""
        cfg = self.config
        return (electrons * np.float32(cfg.gain_adu_per_e) + np.float32(cfg.offset_adu)).astype(np.float32)

    def digitize(self, electrons: np.ndarray, seed: int) -> np.ndarray:
        """One noisy uint16 exposure of an expected photo-electron image (float32), reproducible by seed.

        Shot noise is exact Poisson where a pixel expects fewer than ``exact_poisson_below_e`` electrons and a
        normal draw with the same mean and variance above it (the Poisson distribution's own large-count
        limit); read noise is added in the same normal draw. The normal draw uses torch's vectorised sampler
        (about 3x faster than numpy's ziggurat); the arithmetic stays in numpy (one thread, no spin-waits).
        """
        cfg = self.config
        e = np.ascontiguousarray(electrons, dtype=np.float32)
        detected = torch.randn(e.shape, generator=torch.Generator().manual_seed(seed)).numpy()
        sigma = e + np.float32(cfg.read_noise_e**2)
        np.sqrt(sigma, out=sigma)
        detected *= sigma
        detected += e
        if e.min() < cfg.exact_poisson_below_e:
            low = e < cfg.exact_poisson_below_e
            rng = np.random.default_rng(seed)
            lam = e[low]
            detected[low] = rng.poisson(lam) + rng.standard_normal(lam.shape) * cfg.read_noise_e
        detected *= np.float32(cfg.gain_adu_per_e)
        detected += np.float32(cfg.offset_adu + 0.5)
        np.clip(detected, 0, ADC_MAX, out=detected)
        return detected.astype(np.uint16)
