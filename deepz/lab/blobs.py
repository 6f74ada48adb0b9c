"""Gaussian-blob worm stand-in with known positions and activity, for tests and benchmarks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["BlobConfig", "BlobTruth", "BlobWorld"]


@dataclass(frozen=True)
class BlobConfig:
    """Shape of the synthetic scene: volume, voxel size, neuron count, nucleus size, motion, noise."""

    shape: tuple[int, int, int] = (32, 512, 512)
    voxel_um: tuple[float, float, float] = (0.65, 0.325, 0.325)
    n_neurons: int = 200
    nucleus_sigma_um: float = 0.7
    min_spacing_um: float = 3.2
    drift_amplitude_um: tuple[float, float, float] = (0.5, 6.0, 9.0)
    drift_period_s: float = 20.0
    wobble_um: float = 0.3
    brightness: float = 400.0
    background: float = 100.0
    noise: float = 5.0
    seed: int = 0


@dataclass(frozen=True)
class BlobTruth:
    """Ground truth at one instant: ids (N,), positions (N, 3) um, activity (N,) (0 = baseline)."""

    t_s: float
    ids: np.ndarray
    positions_um: np.ndarray
    activity: np.ndarray


class BlobWorld:
    """Deterministic scene of Gaussian nuclei drifting and wobbling, with calcium-like activity."""

    def __init__(self, config: BlobConfig | None = None) -> None:
        self.config = cfg = config or BlobConfig()
        rng = np.random.default_rng(cfg.seed)
        extent = np.asarray(cfg.shape) * np.asarray(cfg.voxel_um)
        margin = np.minimum(
            3.0 * cfg.nucleus_sigma_um + np.abs(cfg.drift_amplitude_um) + cfg.wobble_um, extent / 4
        )
        self._base = self._place(rng, extent, margin, cfg.n_neurons, cfg.min_spacing_um)
        self._phase = rng.uniform(0, 2 * np.pi, size=(len(self._base), 3))
        self._spikes = [
            np.sort(rng.uniform(-5.0, 600.0, size=rng.poisson(60))) for _ in range(len(self._base))
        ]
        self._gain = rng.uniform(0.6, 1.4, size=len(self._base))
        self._extent = extent

    @staticmethod
    def _place(
        rng: np.random.Generator, extent: np.ndarray, margin: np.ndarray, n: int, spacing: float
    ) -> np.ndarray:
        points: list[np.ndarray] = []
        for _ in range(200 * n):
            if len(points) == n:
                break
            p = rng.uniform(margin, extent - margin)
            if not points or np.min(np.linalg.norm(np.asarray(points) - p, axis=1)) >= spacing:
                points.append(p)
        return np.asarray(points).reshape(-1, 3)

    def truth(self, t_s: float) -> BlobTruth:
        """Positions and activity at time t_s (the margins keep every neuron inside the volume)."""
        cfg = self.config
        wobble = cfg.wobble_um * np.sin(2 * np.pi * 0.2 * t_s + self._phase)
        wobble[:, 0] *= 0.3
        pos = (
            self._base
            + np.asarray(cfg.drift_amplitude_um) * np.sin(2 * np.pi * t_s / cfg.drift_period_s)
            + wobble
        )
        activity = np.array([self._calcium(s, t_s) for s in self._spikes])
        return BlobTruth(t_s, np.arange(len(pos)), pos, activity)

    @staticmethod
    def _calcium(spikes: np.ndarray, t_s: float) -> float:
        dt = t_s - spikes[spikes <= t_s]
        return float(np.sum((1 - np.exp(-dt / 0.1)) * np.exp(-dt / 1.5)))

    def volume(self, t_s: float, *, noise: bool = True, device: str | torch.device = "cpu") -> torch.Tensor:
        """Render the (Z, Y, X) float32 volume at t_s; intensity scales with 1 + activity."""
        cfg = self.config
        truth = self.truth(t_s)
        amp = torch.as_tensor(
            cfg.brightness * self._gain * (1 + truth.activity), dtype=torch.float32, device=device
        )
        vol = torch.full(cfg.shape, cfg.background, dtype=torch.float32, device=device)
        r = [int(np.ceil(3.5 * cfg.nucleus_sigma_um / v)) for v in cfg.voxel_um]
        grids = [torch.arange(-ri, ri + 1, device=device) for ri in r]
        centres = torch.as_tensor(
            truth.positions_um / np.asarray(cfg.voxel_um), dtype=torch.float32, device=device
        )
        base = centres.round().long()
        idx = [base[:, a, None] + grids[a][None, :] for a in range(3)]  # (N, w_a)
        w = []
        for a in range(3):
            d_um = (idx[a].float() - centres[:, a, None]) * cfg.voxel_um[a]
            w.append(torch.exp(-0.5 * (d_um / cfg.nucleus_sigma_um) ** 2))
        blob = (
            amp[:, None, None, None]
            * w[0][:, :, None, None]
            * w[1][:, None, :, None]
            * w[2][:, None, None, :]
        )
        zi, yi, xi = (i.clamp(0, n - 1) for i, n in zip(idx, cfg.shape, strict=True))
        inside = (
            ((idx[0] >= 0) & (idx[0] < cfg.shape[0]))[:, :, None, None]
            & ((idx[1] >= 0) & (idx[1] < cfg.shape[1]))[:, None, :, None]
            & ((idx[2] >= 0) & (idx[2] < cfg.shape[2]))[:, None, None, :]
        )
        flat = (zi[:, :, None, None] * cfg.shape[1] + yi[:, None, :, None]) * cfg.shape[2] + xi[
            :, None, None, :
        ]
        vol.view(-1).index_add_(0, flat[inside], blob[inside])
        if noise:
            gen = torch.Generator(device=device).manual_seed(int(cfg.seed * 1_000_003 + round(t_s * 1000)))
            vol += cfg.noise * torch.randn(cfg.shape, generator=gen, device=device)
        return vol
