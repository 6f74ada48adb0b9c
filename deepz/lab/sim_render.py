"""acquire.sim's wide-field image formation in torch, on the training device: fresh worms without the host.

The simulator (acquire/sim) renders a frame by adding each nucleus's defocus stamp (its size class's image at
that defocus, from psfmodels PSFs) at its sub-pixel position, then a camera: Poisson shot noise (its normal
limit above exact_poisson_below_e electrons), read noise, gain, offset and a 16-bit ADC. This module does the
same with the same StampBank on a torch device: every (focal plane, nucleus) stamp of a whole focal stack is
gathered from a padded stamp table, split bilinearly over the four neighbouring pixels and scatter-added in
a few large index_add_ calls, so a GPU renders a worm's stack in milliseconds. The worm itself (nucleus
layout, activity, motion) comes from acquire.sim's sample model, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from acquire.sim.config import SimConfig
from acquire.sim.optics import build_stamps
from acquire.sim.render import ADC_MAX
from acquire.sim.sample import Worm

_ELEMENT_BUDGET = 1 << 24  # stamp pixels scatter-added per index_add_ call (bounds temporary memory)
_SIZE_STEP = 8  # stamps are padded to the next multiple of this (+1), so a stack needs only a few groups


@dataclass(frozen=True)
class WormLayout:
    """One worm at one instant: nucleus centres (z, y, x) um, size classes and photo-electrons per exposure."""

    positions_um: np.ndarray  # (N, 3) float32
    size_class: np.ndarray  # (N,) int64
    electrons: np.ndarray  # (N,) float32


def worm_seed(seed: int, k: int) -> int:
    """Simulator seed of worm k of a stream (stream seeds stay clear of `deepz evaluate --seed` worms)."""
    return seed * 1_000_000 + k


def worm_layout(sim: SimConfig, seed: int, k: int) -> WormLayout:
    """Worm k of stream ``seed``: acquire.sim's Worm with seed worm_seed(seed, k) at a random time of its motion.

    A pure function of its arguments (picklable, so layout workers can draw worms ahead in other processes).
    """
    h, w = sim.camera.shape
    px = sim.optics.pixel_size_um
    worm = Worm(sim.worm, worm_seed(seed, k), ((h - 1) / 2 * px, (w - 1) / 2 * px))
    t = float(np.random.default_rng([seed, k]).uniform(0, sim.worm.motion.period_s))
    truth = worm.truth(t)
    return WormLayout(truth.positions_um.astype(np.float32), worm.size_class.astype(np.int64),
                      truth.brightness.astype(np.float32))


class TorchMicroscope:
    """The simulated wide-field microscope of a SimConfig, rendering whole focal stacks on a torch device."""

    def __init__(self, sim: SimConfig, z_um: np.ndarray, device: torch.device) -> None:
        self.sim, self.device = sim, device
        self.z_um = np.asarray(z_um, np.float32)
        cfg = sim.worm
        bank = build_stamps(sim.optics, np.linspace(*cfg.nucleus_diameter_um, cfg.size_classes), "widefield")
        # only the defocus planes a nucleus of this worm can reach from these focal planes
        reach_um = float(np.abs(self.z_um).max()) + cfg.body_half_depth_um + cfg.motion.z_drift_um + 1.0
        keep = np.flatnonzero(np.abs(bank.defocus_um) <= reach_um + 1e-6)
        self._d0 = float(bank.defocus_um[keep[0]])
        self._step = float(bank.defocus_um[1] - bank.defocus_um[0])
        sizes = np.array([[bank.stamps[c][j].shape[0] for j in keep] for c in range(len(bank.stamps))])
        s_max = int(sizes.max())
        table = np.zeros((len(bank.stamps), len(keep), s_max, s_max), np.float32)
        for c, planes in enumerate(bank.stamps):
            for q, j in enumerate(keep):
                p = planes[j]
                o = (s_max - p.shape[0]) // 2
                table[c, q, o:o + p.shape[0], o:o + p.shape[1]] = p
        self._sizes, self._s_max = sizes, s_max
        self._table = torch.from_numpy(table).to(device)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every frame."""
        return tuple(self.sim.camera.shape)  # type: ignore[return-value]

    def expected_electrons(self, layout: WormLayout) -> torch.Tensor:
        """(Z, H, W) noise-free photo-electrons (background included) at each focal plane, float32."""
        h, w = self.shape
        nz = len(self.z_um)
        # every plane's pixels, flat, and one last bin that collects the stamp pixels falling off the frame
        canvas = torch.full((nz * h * w + 1,), self.sim.camera.background_e, device=self.device)
        defocus = layout.positions_um[None, :, 0] - self.z_um[:, None]  # (Z, N)
        plane = np.clip(np.rint((defocus - self._d0) / self._step).astype(np.int64), 0, self._sizes.shape[1] - 1)
        cls = np.broadcast_to(layout.size_class[None, :], plane.shape)
        padded = np.minimum(((self._sizes[cls, plane] - 1) // _SIZE_STEP + 1) * _SIZE_STEP + 1, self._s_max)
        zi = np.broadcast_to(np.arange(nz)[:, None], plane.shape)
        ni = np.broadcast_to(np.arange(len(layout.electrons))[None, :], plane.shape)
        yx = layout.positions_um[:, 1:] / self.sim.optics.pixel_size_um
        reach_px = padded // 2 + 1  # a stamp further than this off the frame adds nothing to it
        touches = (yx[None, :, 0] + reach_px >= 0) & (yx[None, :, 0] - reach_px < h) & \
            (yx[None, :, 1] + reach_px >= 0) & (yx[None, :, 1] - reach_px < w)
        for size in np.unique(padded[touches]):
            sel = (padded == size) & touches
            per_call = max(1, _ELEMENT_BUDGET // (int(size) + 1) ** 2)
            z_sel, n_sel, c_sel, p_sel = zi[sel], ni[sel], cls[sel], plane[sel]
            for a in range(0, len(z_sel), per_call):
                part = slice(a, a + per_call)
                self._scatter(canvas, int(size), z_sel[part], layout.positions_um[n_sel[part]],
                              layout.electrons[n_sel[part]], c_sel[part], p_sel[part])
        return canvas[:-1].view(nz, h, w)

    def _scatter(self, canvas: torch.Tensor, size: int, z: np.ndarray, pos_um: np.ndarray, electrons: np.ndarray,
                 cls: np.ndarray, plane: np.ndarray) -> None:
        """Add K stamps (cropped to size x size, bilinearly shifted to sub-pixel positions) into the canvas."""
        dev, (h, w) = self.device, self.shape
        px = self.sim.optics.pixel_size_um
        yx = pos_um[:, 1:].astype(np.float64) / px
        r0, c0 = np.floor(yx[:, 0]), np.floor(yx[:, 1])
        t = lambda a, dt=torch.float32: torch.as_tensor(np.ascontiguousarray(a), dtype=dt).to(dev)  # noqa: E731
        fy, fx, e = t(yx[:, 0] - r0)[:, None, None], t(yx[:, 1] - c0)[:, None, None], t(electrons)[:, None, None]
        o = (self._s_max - size) // 2
        stamps = self._table[t(cls, torch.long), t(plane, torch.long), o:o + size, o:o + size] * e
        k = len(z)
        patch = torch.zeros(k, size + 1, size + 1, device=dev)
        rows = torch.zeros(k, size, size + 1, device=dev)
        rows[:, :, :size] += stamps * (1 - fx)
        rows[:, :, 1:] += stamps * fx
        patch[:, :size] += rows * (1 - fy)
        patch[:, 1:] += rows * fy
        half = size // 2
        offs = torch.arange(size + 1, device=dev)
        rr = t(r0 - half, torch.long)[:, None, None] + offs[None, :, None]
        cc = t(c0 - half, torch.long)[:, None, None] + offs[None, None, :]
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        flat = t(z, torch.long)[:, None, None] * (h * w) + rr * w + cc
        canvas.index_add_(0, torch.where(inside, flat, canvas.numel() - 1).reshape(-1), patch.reshape(-1))

    def expected_adu(self, electrons: torch.Tensor) -> torch.Tensor:
        """Noise-free mean ADU (offset included), like acquire.sim's Camera.expected_adu."""
        cam = self.sim.camera
        return electrons * cam.gain_adu_per_e + cam.offset_adu

    def digitize(self, electrons: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Noisy ADU (integers in float32) like acquire.sim's Camera.digitize: Poisson / normal limit, read noise,
        gain, offset, clipped to 16 bits."""
        cam = self.sim.camera
        read_var = cam.read_noise_e**2
        detected = electrons + torch.randn(electrons.shape, generator=generator, device=electrons.device) * (
            electrons + read_var).sqrt()
        low = electrons < cam.exact_poisson_below_e
        if bool(low.any()):
            exact = torch.poisson(electrons.clamp_min(0), generator=generator) + torch.randn(
                electrons.shape, generator=generator, device=electrons.device) * cam.read_noise_e
            detected = torch.where(low, exact, detected)
        return (detected * cam.gain_adu_per_e + (cam.offset_adu + 0.5)).clamp(0, ADC_MAX).floor()

    def render_stack(self, layout: WormLayout, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(noisy ADU, clean ADU), each (Z, H, W) float32 on the device; the noise is a function of seed."""
        electrons = self.expected_electrons(layout)
        gen = torch.Generator(device=self.device).manual_seed(seed)
        return self.digitize(electrons, gen), self.expected_adu(electrons)
