"""Square pixel patches around sub-pixel centres: flat frame indices, offsets and in-frame masks (torch)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Patches", "cut_patches"]


@dataclass(frozen=True)
class Patches:
    """(N, P, P) patches of a (H, W) frame: where each pixel lies and how far it is from its centre.

    ``index`` holds flat frame indices (clamped into the frame), ``inside`` marks pixels really in the frame;
    ``dy``/``dx`` are pixel minus centre in pixels, so a radial stamp is a function of hypot(dy, dx).
    ``slot`` is ``index`` flattened with every pixel outside the frame sent to one slot past its end, which
    ``gather`` and ``render`` keep at 0 (a mask multiplied in took 4x as long as the gather itself).
    """

    index: torch.Tensor  # (N, P, P) int64
    inside: torch.Tensor  # (N, P, P) bool
    dy: torch.Tensor  # (N, P, P) float32
    dx: torch.Tensor  # (N, P, P) float32
    shape: tuple[int, int]
    slot: torch.Tensor  # (N * P * P,) int64, H * W outside the frame
    corner: torch.Tensor  # (N, 2) int64 frame row and column of each patch's first pixel (may lie outside)

    def gather(self, frames: torch.Tensor) -> torch.Tensor:
        """Frame values at every patch pixel (0 outside the frame): (..., H, W) -> (..., N, P, P); leading
        dimensions (e.g. a scan's planes) are gathered at once."""
        lead = frames.shape[:-2]
        flat = frames.reshape(-1, self.shape[0] * self.shape[1])
        padded = torch.cat([flat, flat.new_zeros(len(flat), 1)], 1)
        return padded.index_select(1, self.slot).reshape(*lead, *self.index.shape)

    def render(self, values: torch.Tensor) -> torch.Tensor:
        """Sum (..., N, P, P) patch values into zero (..., H, W) frames (pixels outside them are dropped)."""
        lead = values.shape[:-3]
        flat = values.reshape(-1, self.slot.numel())
        out = flat.new_zeros(len(flat), self.shape[0] * self.shape[1] + 1)
        out.index_add_(1, self.slot, flat)
        return out[:, :-1].reshape(*lead, *self.shape)


def cut_patches(centres_px: torch.Tensor, half: int, shape: tuple[int, int]) -> Patches:
    """Patches of (2 half + 1)^2 pixels around (N, 2) sub-pixel (row, col) centres in a frame of ``shape``."""
    if centres_px.ndim != 2 or centres_px.shape[1] != 2:
        raise ValueError(f"centres_px must be (N, 2) (row, col) pixels, got {tuple(centres_px.shape)}.")
    h, w = shape
    grid = torch.arange(-half, half + 1, device=centres_px.device)
    lines = torch.round(centres_px).long()[:, :, None] + grid  # (N, 2, P) the patch's rows and columns
    rows, cols = lines[:, 0], lines[:, 1]
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    index = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
    offsets = lines.to(torch.float32) - centres_px.float()[:, :, None]  # (N, 2, P) pixel minus centre
    p = len(grid)
    dy = offsets[:, 0, :, None].expand(-1, -1, p).contiguous()
    dx = offsets[:, 1, None, :].expand(-1, p, -1).contiguous()
    slot = torch.where(inside, index, h * w).reshape(-1)
    return Patches(index, inside, dy, dx, (h, w), slot, lines[:, :, 0])
