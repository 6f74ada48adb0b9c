"""Tiny synthetic focal stacks for model tests: Gaussian nuclei whose blur grows (asymmetrically) with defocus."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from infer.data import write_stacks

OFFSET = 100.0


def blob_stacks(n: int = 3, shape: tuple[int, int] = (64, 64), z_um: np.ndarray | None = None, *,
                n_blobs: int = 12, pixel_um: float = 0.325, seed: int = 0) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray, list[np.ndarray]]:
    """(noisy uint16, clean float32, z_um, positions_um) for n stacks of blobs."""
    z = np.arange(-4.0, 4.01, 0.5, dtype=np.float32) if z_um is None else np.asarray(z_um, np.float32)
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w] * pixel_um
    clean = np.zeros((n, len(z), h, w), np.float32)
    positions = []
    for i in range(n):
        pos = np.column_stack([rng.uniform(z.min(), z.max(), n_blobs), rng.uniform(2, h * pixel_um - 2, n_blobs),
                               rng.uniform(2, w * pixel_um - 2, n_blobs)]).astype(np.float32)
        positions.append(pos)
        for zi, f in enumerate(z):
            for pz, py, px in pos:
                dz = f - pz
                sigma = 0.6 + 0.5 * abs(dz) * (1.3 if dz > 0 else 0.8)
                amp = 800.0 * 0.6**2 / sigma**2
                clean[i, zi] += amp * np.exp(-((yy - py) ** 2 + (xx - px) ** 2) / (2 * sigma**2))
    clean += OFFSET + 20.0
    noisy = np.clip(rng.poisson(clean - OFFSET) + OFFSET + rng.normal(0, 2, clean.shape), 0, 65535).astype(np.uint16)
    return noisy, clean, z, positions


def write_blob_stacks(path: Path, **kwargs) -> Path:
    """Write blob stacks as a stacks.zarr store."""
    noisy, clean, z, pos = blob_stacks(**kwargs)
    return write_stacks(path, noisy, z, pixel_size_um=0.325, offset_adu=OFFSET, targets={"clean": clean},
                        positions_um=pos, attrs={"source": "test blobs"})
