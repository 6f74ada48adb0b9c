"""Per-neuron brightness by demixing one frame: non-negative least squares on the forward model (torch).

The frame is modelled as a constant background plus every neuron's stamp times its brightness. The normal
equations' Gram matrix changes only as neurons move relative to one another (slowly), so it is rebuilt on
a schedule while the projections of the frame are fresh every frame; the non-negative solution comes from
an active set, warm-started from the previous frame's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F

from track.readout.patches import Patches

__all__ = ["Demixer", "DemixResult", "gram_matrix", "overlap_gram"]
OVERLAP_CHUNK = 2**22
"""Pixels ``overlap_gram`` multiplies per step: bounds its gathered windows (32 MB of indices)."""


def gram_matrix(patches: Patches, values: torch.Tensor) -> torch.Tensor:
    """(N + 1, N + 1) Gram matrix of the stamps (N, P, P) and a constant background column (last).

    The stamps are a sparse (N, H * W) matrix (each covers a small patch of the frame). On the CPU scipy
    multiplies it by its transpose (13 ms for 200 neurons in a 512x512 frame; torch's sparse product 72 ms:
    it sorts the transpose); on a GPU ``overlap_gram`` multiplies the pixels each pair of patches shares (an
    H200 took 6.2 ms for torch's sparse product, rebuilt every third frame of a 10 ms budget)."""
    n = values.shape[0]
    gram = torch.zeros(n + 1, n + 1, dtype=torch.float64, device=values.device)
    if values.device.type == "cpu":
        keep = patches.inside & (values != 0)
        columns = patches.index[keep]  # neuron by neuron, each one's frame pixels ascending (row-major)
        starts = np.concatenate([[0], np.cumsum(keep.flatten(1).sum(dim=1).numpy())])
        hw = patches.shape[0] * patches.shape[1]
        entries = values[keep].double().numpy()
        stamps = scipy.sparse.csr_matrix((entries, columns.numpy(), starts), shape=(n, hw))
        gram[:n, :n] = torch.from_numpy((stamps @ stamps.T).toarray())
    else:
        gram[:n, :n] = overlap_gram(patches, values)
    sums = (values * patches.inside).sum(dim=(1, 2)).double()
    gram[:n, n] = gram[n, :n] = sums
    gram[n, n] = patches.shape[0] * patches.shape[1]
    return gram


def overlap_gram(patches: Patches, values: torch.Tensor) -> torch.Tensor:
    """(N, N) float64 sums over the frame of each pair of stamps' product: for every pair of patches that
    overlap, the window of the one that meets the other's pixels, gathered from zero-padded copies and
    multiplied at once (``OVERLAP_CHUNK`` pixels a step). A few kernels and one wait for the pair count,
    where a sparse product sorts a million entries; on a CPU scipy's sparse product is 5-7x faster."""
    n, p = values.shape[0], values.shape[-1]
    device = values.device
    own = (values * patches.inside).double()
    delta = patches.corner[:, None, :] - patches.corner[None, :, :]  # (N, N, 2) i's first pixel minus j's
    near = (delta.abs() < p).all(dim=2) & torch.ones(n, n, dtype=torch.bool, device=device).triu()
    first, second = torch.nonzero(near).unbind(1)  # the pairs i <= j whose patches share pixels
    side = 3 * p  # pixel (u, v) of i's patch is pixel (p + u + dy, p + v + dx) of j's padded by p
    padded = F.pad(own, (p, p, p, p)).reshape(-1)
    shift = delta[first, second]
    start = second * side * side + (p + shift[:, 0]) * side + (p + shift[:, 1])
    window = (torch.arange(p, device=device)[:, None] * side + torch.arange(p, device=device)).reshape(-1)
    flat = own.reshape(n, -1)
    step = max(1, OVERLAP_CHUNK // (p * p))
    dots = torch.cat([
        (flat[first[k : k + step]] * padded[start[k : k + step, None] + window]).sum(dim=1)
        for k in range(0, len(first), step)
    ]) if len(first) else own.new_zeros(0)  # fmt: skip
    gram = own.new_zeros(n, n)
    gram[first, second] = dots
    gram[second, first] = dots
    return gram


@dataclass(frozen=True)
class DemixResult:
    """Brightness (N,) >= 0, the background level, and each brightness' standard error per unit noise."""

    brightness: torch.Tensor
    background: torch.Tensor  # 0-d, on the device (read on the host with the rest of a frame's results)
    unit_error: torch.Tensor  # sqrt(diag(G^-1)) on the active set; inf where the neuron is clamped to 0


class Demixer:
    """Solves min ||frame - bg - sum_n b_n S_n||^2 with b >= 0 for one frame at a time.

    The active set (the neurons not clamped to 0) seldom changes from frame to frame, and the Gram matrix only
    at a rebuild, so the inverse of the Gram matrix over the active set is kept: a frame is then one
    matrix-vector product and one check. The inverse is of the whole matrix with the clamped rows and columns
    replaced by the identity's (same shapes every frame, no index lists: few kernels and host syncs on a GPU).
    """

    def __init__(self, max_rounds: int = 4) -> None:
        self.max_rounds = max_rounds
        self._gram: torch.Tensor | None = None  # scaled to a unit diagonal
        self._scale: torch.Tensor | None = None
        self._free: torch.Tensor | None = None
        self._inverse: torch.Tensor | None = None  # over the active set ``_free`` (None: to be worked out)

    @property
    def has_gram(self) -> bool:
        """Whether a Gram matrix is set (set_gram was called for the current neurons)."""
        return self._gram is not None

    def set_gram(self, gram: torch.Tensor) -> None:
        """Use this (N + 1, N + 1) Gram matrix from now on; a new neuron count resets the warm start."""
        if self._free is None or self._free.shape[0] != gram.shape[0]:
            self._free = torch.ones(gram.shape[0], dtype=torch.bool, device=gram.device)
        self._scale = torch.diagonal(gram).clamp(min=1e-30).rsqrt()  # unit diagonal: stamps and background
        self._gram = gram * self._scale[:, None] * self._scale[None, :]  # columns differ in scale by ~1e4
        self._inverse = None

    def _inverse_on(self, free: torch.Tensor) -> torch.Tensor:
        """The inverse of the Gram matrix over the ``free`` rows and columns (identity elsewhere)."""
        g = self._gram
        eye = torch.eye(len(free), dtype=g.dtype, device=g.device)
        active = torch.where(free[:, None] & free[None, :], g + 1e-10 * eye, eye)
        return torch.cholesky_inverse(torch.linalg.cholesky(active))

    def solve(self, projections: torch.Tensor) -> DemixResult:
        """Brightness from the frame's projections onto each stamp and the background column (N + 1,)."""
        if self._gram is None or self._free is None or self._scale is None:
            raise RuntimeError("Demixer.solve needs a Gram matrix; call set_gram first.")
        g, scale = self._gram, self._scale
        h = projections.double() * scale
        free = self._free.clone()  # the last frame's active set, which _inverse (if any) is over
        free[-1] = True  # the background is unconstrained
        for _ in range(self.max_rounds):
            if self._inverse is None:
                self._inverse = self._inverse_on(free)
            x = self._inverse @ torch.where(free, h, 0.0)  # 0 on the clamped neurons
            negative = (x[:-1] < 0) & free[:-1]
            gradient = h - g @ x  # > 0 for a clamped neuron that would brighten the fit
            enter = (~free[:-1]) & (gradient[:-1] > 0)
            change = negative | enter
            if not bool(change.any()):
                break
            free[:-1] ^= change  # the negative ones leave the active set, the entering ones join it
            self._inverse = None
        x[:-1] = x[:-1].clamp(min=0)
        self._free = free
        if self._inverse is None:  # the rounds ran out with the active set still changing
            self._inverse = self._inverse_on(free)
        diagonal = torch.diagonal(self._inverse).clamp(min=0).sqrt()
        error = torch.where(free, diagonal, float("inf"))
        x, error = x * scale, error * scale
        return DemixResult(x[:-1].float(), x[-1], error[:-1].float())
