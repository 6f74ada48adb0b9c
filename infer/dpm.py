"""Digital propagation matrices (DPMs): per-pixel refocus distances in um (+ = above the current focus)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def uniform_planes(z_min: float, z_max: float, k: int) -> np.ndarray:
    """K evenly spaced refocus distances from z_min to z_max inclusive (um)."""
    if k < 1:
        raise ValueError(f"Need at least one plane, got k={k}.")
    if k == 1:
        return np.array([(z_min + z_max) / 2], dtype=np.float32)
    return np.linspace(z_min, z_max, k, dtype=np.float32)


def uniform_dpm(planes_um: Sequence[float] | np.ndarray | float, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) constant DPMs for each plane (or (H, W) for a scalar)."""
    planes = np.asarray(planes_um, dtype=np.float32)
    return np.broadcast_to(planes[..., None, None], planes.shape + tuple(shape)).copy()


def _grid(shape: tuple[int, int], pixel_size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Centred (y, x) coordinates in um."""
    h, w = shape
    y = (np.arange(h, dtype=np.float32) - (h - 1) / 2) * pixel_size_um
    x = (np.arange(w, dtype=np.float32) - (w - 1) / 2) * pixel_size_um
    return np.meshgrid(y, x, indexing="ij")


def tilted_dpm(
    shape: tuple[int, int], pixel_size_um: float, *, offset_um: float = 0.0,
    slope_y: float = 0.0, slope_x: float = 0.0,
) -> np.ndarray:
    """(H, W) tilted plane: d = offset + slope_y * y + slope_x * x (um per um, about the image centre)."""
    y, x = _grid(shape, pixel_size_um)
    return (offset_um + slope_y * y + slope_x * x).astype(np.float32)


def curved_dpm(
    shape: tuple[int, int], pixel_size_um: float, *, offset_um: float = 0.0,
    coefficients: dict[tuple[int, int], float] | None = None, height_map_um: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) curved surface: offset + a polynomial sum c[(i, j)] * y**i * x**j (um) and/or a height map."""
    y, x = _grid(shape, pixel_size_um)
    out = np.full(shape, offset_um, dtype=np.float32)
    for (i, j), c in (coefficients or {}).items():
        out += np.float32(c) * y**i * x**j
    if height_map_um is not None:
        hm = np.asarray(height_map_um, dtype=np.float32)
        if hm.shape != tuple(shape):
            raise ValueError(f"height_map_um has shape {hm.shape}; it must match the frame shape {tuple(shape)}.")
        out += hm
    return out


def stack_dpms(dpms: Sequence[np.ndarray]) -> np.ndarray:
    """Arbitrary per-pixel maps (each (H, W)) -> one (K, H, W) float32 DPM stack."""
    return np.stack([np.asarray(d, dtype=np.float32) for d in dpms])


def validate_dpm(dpm: np.ndarray, axial_range_um: float) -> np.ndarray:
    """Return dpm as float32 (K, H, W) or (H, W), or raise ValueError if it leaves +/-axial_range_um."""
    dpm = np.asarray(dpm, dtype=np.float32)
    if dpm.ndim not in (2, 3):
        raise ValueError(f"A DPM must be (H, W) or (K, H, W); got shape {dpm.shape}.")
    if not np.all(np.isfinite(dpm)):
        raise ValueError("The DPM holds NaN or infinite values; every pixel needs a refocus distance in um.")
    lo, hi = float(dpm.min()), float(dpm.max())
    if lo < -axial_range_um - 1e-4 or hi > axial_range_um + 1e-4:
        raise ValueError(
            f"The DPM spans {lo:+.2f}..{hi:+.2f} um but the model was trained for +/-{axial_range_um:g} um; "
            "choose planes inside that range or use a model trained for a larger range."
        )
    return dpm
