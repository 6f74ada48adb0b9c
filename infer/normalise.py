"""uint16 <-> normalised float conversion and network-input assembly (torch; runs on any device)."""

from __future__ import annotations

import torch

from infer.manifest import Normalisation


def to_normalised(frames: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """uint16 (or any number) tensor -> float32 (x - offset_adu) / scale_adu."""
    return (frames.to(torch.float32) - norm.offset_adu) / norm.scale_adu


def from_normalised(x: torch.Tensor, norm: Normalisation) -> torch.Tensor:
    """Normalised float -> uint16 tensor, rounded and clipped to 0..65535."""
    return torch.clamp(torch.round(x.to(torch.float32) * norm.scale_adu + norm.offset_adu), 0, 65535).to(
        torch.uint16
    )


def network_input(frames: torch.Tensor, dpm_um: torch.Tensor, axial_range_um: float) -> torch.Tensor:
    """(B, H, W) normalised frames + (K, H, W) DPMs in um -> (B*K, 2, H, W); row b*K + k = frame b, DPM k."""
    b, h, w = frames.shape
    k = dpm_um.shape[0]
    img = frames[:, None].expand(b, k, h, w)
    dpm = (dpm_um.to(frames.dtype) / axial_range_um)[None].expand(b, k, h, w)
    return torch.stack([img, dpm], dim=2).reshape(b * k, 2, h, w)
