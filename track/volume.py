"""Validation and conversion of input volumes to float32 torch tensors on the requested device."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["CheckedVolume", "as_volume_tensor", "checked_volume", "gather_windows"]


@dataclass(frozen=True)
class CheckedVolume:
    """A volume validated and converted once, on its device: detection, refinement and sampling take it as is
    (a live tracker converts each volume once, not once per step)."""

    tensor: torch.Tensor


def checked_volume(volume: np.ndarray | torch.Tensor | CheckedVolume,
                   device: str | torch.device | None = None) -> CheckedVolume:
    """The volume validated and on `device` (see as_volume_tensor), for handing to several steps."""
    return CheckedVolume(as_volume_tensor(volume, device))


def as_volume_tensor(
    volume: np.ndarray | torch.Tensor | CheckedVolume, device: str | torch.device | None = None
) -> torch.Tensor:
    """Return a finite, non-empty (Z, Y, X) float32 tensor on `device` (default: the input's, else CPU)."""
    if isinstance(volume, CheckedVolume):
        return volume.tensor if device is None else volume.tensor.to(device)
    return _converted(volume, device)


def _converted(volume: np.ndarray | torch.Tensor, device: str | torch.device | None) -> torch.Tensor:
    """Validate and convert (one host-to-device copy for an array and another device)."""
    if isinstance(volume, torch.Tensor):
        tensor = volume.to(device=device or volume.device)
    else:
        array = np.asarray(volume)
        if array.dtype.kind not in "uif":
            raise TypeError(
                f"Volume dtype {array.dtype} is not numeric; pass a uint16 or float (Z, Y, X) array."
            )
        tensor = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32, copy=False)).to(
            device or "cpu"
        )
    if tensor.ndim != 3:
        raise ValueError(
            f"Expected one volume shaped (Z, Y, X), got {tuple(tensor.shape)}; index a single time point "
            "(and channel) before detection."
        )
    if tensor.numel() == 0:
        raise ValueError(
            f"Volume is empty (shape {tuple(tensor.shape)}); every axis needs at least one voxel."
        )
    tensor = tensor.float()
    if not bool(torch.isfinite(tensor.sum())):  # one reduction: NaN/inf propagate
        raise ValueError(
            "Volume contains NaN or infinite values; replace them (e.g. np.nan_to_num) before detection."
        )
    return tensor


def gather_windows(
    volume: torch.Tensor, centres_vox: torch.Tensor, radius_vox: tuple[int, int, int]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut (N, 2rz+1, 2ry+1, 2rx+1) windows around integer centres (N, 3): windows, offsets, inside mask."""
    grids = [torch.arange(-r, r + 1, device=volume.device) for r in radius_vox]
    offsets = torch.stack(torch.meshgrid(*grids, indexing="ij"), dim=-1)  # (wz, wy, wx, 3)
    _, ny, nx = volume.shape
    axis_idx = [centres_vox[:, a, None] + grids[a][None, :] for a in range(3)]  # (N, w_a) per axis
    ok = [(i >= 0) & (i < n) for i, n in zip(axis_idx, volume.shape, strict=True)]
    inside = ok[0][:, :, None, None] & ok[1][:, None, :, None] & ok[2][:, None, None, :]
    z, y, x = (i.clamp(0, n - 1) for i, n in zip(axis_idx, volume.shape, strict=True))
    flat = (z[:, :, None, None] * ny + y[:, None, :, None]) * nx + x[:, None, None, :]
    windows = volume.reshape(-1)[flat]
    return windows, offsets, inside
