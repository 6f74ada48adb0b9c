"""Bicubic upsampling of raw camera frames onto the finer grid of a super-resolution model's target."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def upsample(images: np.ndarray, factor: int) -> np.ndarray:
    """Bicubic x`factor` upsampling of (..., h, w) images to float32 (..., factor*h, factor*w).

    Pixel centres follow the half-pixel convention (align_corners=False): input pixel c lands on output
    coordinate factor*c + (factor-1)/2, which is how the simulator centres a worm on cameras of any pixel size.
    """
    if factor < 1 or int(factor) != factor:
        raise ValueError(f"the upsampling factor must be a whole number >= 1, got {factor}")
    x = np.asarray(images, dtype=np.float32)
    if factor == 1:
        return x.copy()
    if x.ndim < 2:
        raise ValueError(f"upsample needs images shaped (..., H, W), got shape {x.shape}")
    t = torch.from_numpy(np.ascontiguousarray(x.reshape(-1, 1, *x.shape[-2:])))
    up = F.interpolate(t, scale_factor=int(factor), mode="bicubic", align_corners=False)
    return up.numpy().reshape(*x.shape[:-2], *up.shape[-2:])


def upsample_frames(frames: np.ndarray, factor: int) -> np.ndarray:
    """Raw uint16 frames (..., h, w) -> bicubic-upsampled uint16 frames, rounded and clipped (the model input)."""
    if frames.dtype != np.uint16:
        raise ValueError(f"upsample_frames takes raw uint16 camera frames, got dtype {frames.dtype}")
    if factor == 1:
        return frames
    return np.clip(np.rint(upsample(frames, factor)), 0, 65535).astype(np.uint16)
