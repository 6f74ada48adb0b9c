"""Training pairs drawn on the device in batches from focal stacks resident there (the GPU twin of PairSampler).

The numpy PairSampler draws one pair at a time on the host; fed that way a GPU trained at a fifth of its rate
(../shared/gpu/README.md). Here the stacks live on the training device as tensors and a whole batch is one
gather: stack, crop corner, input plane, target plane (or a per-pixel target-plane map for non-uniform DPMs)
and augmentation are drawn together. The few random numbers per pair come from a seeded CPU torch.Generator,
so a seed gives the same pairs on the CPU and on CUDA and a checkpoint resumes the draws on either device;
everything per pixel (surfaces, plane maps, gathers, normalisation) is computed on the device.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from infer.data import PairConfig, check_drawable, dihedral, input_planes, reach


class BatchSource(Protocol):
    """Where a trainer takes its batches: (B, 2, c, c) inputs [image, DPM / range] and (B, 1, c, c) targets."""

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...


def generator_state(gen: torch.Generator) -> dict:
    """A CPU generator's state as JSON (for checkpoints)."""
    return {"torch_generator": base64.b64encode(gen.get_state().numpy().tobytes()).decode()}


def set_generator_state(gen: torch.Generator, state: dict) -> None:
    """Restore a state written by generator_state."""
    if "torch_generator" not in state:
        raise ValueError("This checkpoint's sampler state comes from an older (numpy) sampler; start a new out_dir.")
    raw = np.frombuffer(base64.b64decode(state["torch_generator"]), dtype=np.uint8).copy()
    gen.set_state(torch.from_numpy(raw))


@dataclass(frozen=True)
class DeviceStacks:
    """Focal stacks resident on the device, raw ADU: noisy inputs and targets (N, Z, H, W) on a shared z grid.

    The tensors may be refilled in place (on-the-fly rendering replaces worms as training goes); a sampler
    holding them sees the new worms at its next draw.
    """

    noisy: torch.Tensor
    target: torch.Tensor
    z_um: np.ndarray
    pixel_size_um: float

    @classmethod
    def from_arrays(cls, noisy: np.ndarray, target: np.ndarray, z_um: np.ndarray, pixel_size_um: float,
                    device: torch.device) -> DeviceStacks:
        """Copy host stacks (any dtype) to the device as float32."""
        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(device)

        return cls(put(noisy), put(target), np.asarray(z_um, np.float32), float(pixel_size_um))


def _dihedral_maps(crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(8, crop, crop) source row and column of every output pixel under each augmentation (k, flip)."""
    rows, cols = np.meshgrid(np.arange(crop), np.arange(crop), indexing="ij")
    grid = np.stack([rows, cols])
    maps = np.stack([dihedral(grid, k, flip) for k in range(4) for flip in (False, True)])
    return torch.from_numpy(maps[:, 0].copy()), torch.from_numpy(maps[:, 1].copy())


class DevicePairSampler:
    """Batches of normalised (input plane + DPM, target) crops drawn on the stacks' device.

    The same distribution as infer.data.PairSampler: stack, crop corner and input plane (|z| <= input_z_um)
    uniform; with probability nonuniform_fraction the target follows a random tilted + curved surface snapped
    to the z grid, else one plane uniform within the axial range; a random rotation/flip of the whole pair.
    """

    def __init__(self, stacks: DeviceStacks, config: PairConfig, *, offset_adu: float, scale_adu: float,
                 seed: int = 0) -> None:
        self.stacks, self.config = stacks, config
        self.offset, self.scale = float(offset_adu), float(scale_adu)
        z = stacks.z_um
        self._inputs = input_planes(z, config)
        n, _, h, w = stacks.noisy.shape
        check_drawable(n, (h, w), len(self._inputs), config)
        bounds = np.array([(r[0], r[-1]) for r in (reach(z, i, config) for i in range(len(z)))])
        dev = stacks.noisy.device
        self._lo, self._hi = bounds[:, 0], bounds[:, 1]
        self._z = torch.from_numpy(z).to(dev)
        self._mid = (self._z[1:] + self._z[:-1]) / 2  # nearest grid plane = bucket between midpoints
        c = config.crop
        half = c * stacks.pixel_size_um / 2
        axis = torch.linspace(-half, half, c, dtype=torch.float64).float().to(dev)
        self._yy, self._xx = torch.meshgrid(axis, axis, indexing="ij")
        self._half = half
        rows, cols = _dihedral_maps(c)
        self._rows, self._cols = rows.to(dev), cols.to(dev)
        self.gen = torch.Generator().manual_seed(seed)

    def state(self) -> dict:
        """The draw generator's state (JSON), for resumable training."""
        return generator_state(self.gen)

    def set_state(self, state: dict) -> None:
        """Continue the draws from a saved state."""
        set_generator_state(self.gen, state)

    def _draws(self, batch: int) -> dict[str, torch.Tensor]:
        """Every random number of a batch, drawn on the host from the seeded generator."""
        cfg, g = self.config, self.gen
        n, _, h, w = self.stacks.noisy.shape
        u = torch.rand(batch, 8, generator=g, dtype=torch.float64)
        i = torch.from_numpy(self._inputs)[torch.randint(len(self._inputs), (batch,), generator=g)]
        lo, hi = torch.from_numpy(self._lo)[i], torch.from_numpy(self._hi)[i]
        return {
            "stack": torch.randint(n, (batch,), generator=g),
            "y0": torch.randint(h - cfg.crop + 1, (batch,), generator=g),
            "x0": torch.randint(w - cfg.crop + 1, (batch,), generator=g),
            "i": i, "lo": lo, "hi": hi,
            "j": lo + (u[:, 0] * (hi - lo + 1)).long().clamp_max(hi - lo),
            "nonuniform": u[:, 1] < cfg.nonuniform_fraction,
            "slope": (2 * u[:, 2:4] - 1) * cfg.max_slope,
            "curv": 2 * u[:, 4] - 1,
            "shift": u[:, 5],
            "aug": torch.randint(8, (batch,), generator=g) if cfg.augment else torch.zeros(batch, dtype=torch.long),
        }

    def _plane_maps(self, d: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, c, c) target plane of every output pixel: constant j, or a random surface snapped to the grid."""
        z, c = self._z, self.config.crop
        zi, zlo, zhi = z[d["i"]], z[d["lo"]], z[d["hi"]]
        lo, hi = (zlo - zi)[:, None, None], (zhi - zi)[:, None, None]
        sy, sx = (d["slope"].float()[:, k, None, None] for k in (0, 1))
        curv = d["curv"].float()[:, None, None] * (hi - lo) / 4 / self._half**2
        surf = sy * self._yy + sx * self._xx + curv * (self._yy**2 + self._xx**2)
        s_min, s_max = surf.amin(dim=(1, 2), keepdim=True), surf.amax(dim=(1, 2), keepdim=True)
        a = lo - s_min
        b = torch.maximum(hi - s_max, a)
        surf = surf + a + d["shift"].float()[:, None, None] * (b - a)
        want = torch.minimum(torch.maximum(zi[:, None, None] + surf, zlo[:, None, None]), zhi[:, None, None])
        snapped = torch.bucketize(want, self._mid)
        constant = d["j"][:, None, None].expand(-1, c, c)
        return torch.where(d["nonuniform"][:, None, None], snapped, constant)

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 2, c, c) inputs [image, DPM / axial_range_um] and (B, 1, c, c) targets, on the device."""
        dev = self.stacks.noisy.device
        d = {k: v.to(dev, non_blocking=True) for k, v in self._draws(batch).items()}
        rows = d["y0"][:, None, None] + self._rows[d["aug"]]
        cols = d["x0"][:, None, None] + self._cols[d["aug"]]
        n = d["stack"][:, None, None]
        j_map = self._plane_maps(d)
        image = self.stacks.noisy[n, d["i"][:, None, None], rows, cols]
        target = self.stacks.target[n, j_map, rows, cols]
        dpm = (self._z[j_map] - self._z[d["i"]][:, None, None]) / self.config.axial_range_um
        x = torch.stack([(image - self.offset) / self.scale, dpm], dim=1)
        return x, ((target - self.offset) / self.scale)[:, None]
