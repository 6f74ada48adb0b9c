"""Image and detection metrics: PSNR, SSIM (also the structural training loss), Pearson r, matched F1."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment


def _gaussian_1d(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> torch.Tensor:
    g = torch.exp(-((torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2) ** 2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter, valid region."""
    return F.conv2d(F.conv2d(x, g[None, None, None, :]), g[None, None, :, None])


def ssim_map(a: torch.Tensor, b: torch.Tensor, data_range: float | torch.Tensor = 1.0) -> torch.Tensor:
    """Per-pixel SSIM (Wang et al. 2004, 11x11 Gaussian window sigma 1.5, valid region) of (N, 1, H, W)."""
    g = _gaussian_1d(device=a.device).to(a.dtype)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = _blur(a, g), _blur(b, g)
    saa = _blur(a * a, g) - mu_a**2
    sbb = _blur(b * b, g) - mu_b**2
    sab = _blur(a * b, g) - mu_a * mu_b
    return ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))


def ssim(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor, data_range: float) -> float | np.ndarray:
    """Mean SSIM of two (H, W) images, or per plane (K,) of two (K, H, W) stacks."""
    ta = torch.as_tensor(np.array(a, dtype=np.float32))
    tb = torch.as_tensor(np.array(b, dtype=np.float32))
    per_plane = ssim_map(ta.reshape(-1, 1, *ta.shape[-2:]), tb.reshape(-1, 1, *tb.shape[-2:]), data_range)
    vals = per_plane.mean(dim=(1, 2, 3)).numpy().astype(np.float64)
    return float(vals[0]) if ta.ndim == 2 else vals


def psnr(pred: np.ndarray, true: np.ndarray, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE)."""
    mse = float(np.mean((np.asarray(pred, np.float64) - np.asarray(true, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(data_range**2 / mse)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation coefficient of two images."""
    a = np.asarray(a, np.float64).ravel() - np.mean(a)
    b = np.asarray(b, np.float64).ravel() - np.mean(b)
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 0.0


@dataclass(frozen=True)
class MatchResult:
    """One-to-one matches between detections and ground truth within a lateral and axial tolerance."""

    pairs: np.ndarray  # (M, 2) indices (detected, true)
    n_detected: int
    n_true: int
    axial_error_um: np.ndarray  # (M,) detected z - true z
    lateral_error_um: np.ndarray  # (M,)

    @property
    def precision(self) -> float:
        """Matched / detected."""
        return len(self.pairs) / self.n_detected if self.n_detected else 0.0

    @property
    def recall(self) -> float:
        """Matched / true."""
        return len(self.pairs) / self.n_true if self.n_true else 0.0

    @property
    def f1(self) -> float:
        """2 matched / (detected + true)."""
        total = self.n_detected + self.n_true
        return 2 * len(self.pairs) / total if total else 1.0


def match_points(detected_um: np.ndarray, true_um: np.ndarray, *, lateral_um: float = 1.5,
                 axial_um: float = 2.0) -> MatchResult:
    """Optimal one-to-one matching of (z, y, x) points, accepting pairs within both tolerances."""
    det = np.asarray(detected_um, np.float64).reshape(-1, 3)
    tru = np.asarray(true_um, np.float64).reshape(-1, 3)
    pairs = np.zeros((0, 2), dtype=int)
    if len(det) and len(tru):
        dz = np.abs(det[:, None, 0] - tru[None, :, 0])
        dxy = np.hypot(det[:, None, 1] - tru[None, :, 1], det[:, None, 2] - tru[None, :, 2])
        ok = (dz <= axial_um) & (dxy <= lateral_um)
        cost = np.where(ok, (dz / axial_um) ** 2 + (dxy / lateral_um) ** 2, 1e6)
        r, c = linear_sum_assignment(cost)
        keep = ok[r, c]
        pairs = np.stack([r[keep], c[keep]], axis=1)
    d, t = det[pairs[:, 0]], tru[pairs[:, 1]]
    return MatchResult(pairs=pairs, n_detected=len(det), n_true=len(tru), axial_error_um=d[:, 0] - t[:, 0],
                       lateral_error_um=np.hypot(d[:, 1] - t[:, 1], d[:, 2] - t[:, 2]))
