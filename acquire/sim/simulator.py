"""WormSimulator: the simulated microscope's public face (ground truth, frames and focal stacks)."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence

import numpy as np

from acquire.sim.config import SimConfig
from acquire.sim.optics import StampBank, build_stamps
from acquire.sim.render import Camera, add_stamps
from acquire.sim.sample import GroundTruth, Worm

MODALITIES = ("widefield", "confocal")


class WormSimulator:
    """A wide-field (or confocal-like) microscope looking at a simulated worm; deterministic for a seed.

    Time ``t_s`` and focus ``focus_z_um`` fully determine a frame: noise is drawn from a generator seeded by
    (seed, t, focus, modality), so the same call always returns the same image.
    """

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        h, w = self.config.camera.shape
        px = self.config.optics.pixel_size_um
        self.worm = Worm(self.config.worm, self.config.seed, ((h - 1) / 2 * px, (w - 1) / 2 * px))
        self.camera = Camera(self.config.camera)
        self._banks: dict[str, StampBank] = {}
        self._lock = threading.Lock()

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of every rendered frame."""
        return tuple(self.config.camera.shape)  # type: ignore[return-value]

    @property
    def pixel_size_um(self) -> float:
        """Pixel size in the sample plane."""
        return self.config.optics.pixel_size_um

    def stamps(self, modality: str = "widefield") -> StampBank:
        """Defocus stamps for a modality, computed once (PSFs are also cached on disk)."""
        if modality not in MODALITIES:
            raise ValueError(f"Unknown modality {modality!r}; use one of {MODALITIES}.")
        with self._lock:
            if modality not in self._banks:
                self._banks[modality] = build_stamps(
                    self.config.optics, self.worm.class_diameters_um, modality
                )
            return self._banks[modality]

    def truth(self, t_s: float) -> GroundTruth:
        """Ground truth (ids, positions (z, y, x) um, activity, brightness in electrons) at time t."""
        return self.worm.truth(t_s)

    def expected_electrons(
        self,
        t_s: float,
        focus_z_um: float,
        *,
        modality: str = "widefield",
        exposure_ms: float | None = None,
        truth: GroundTruth | None = None,
    ) -> np.ndarray:
        """Noise-free photo-electrons per pixel (background included) at time t and focus z, float32."""
        bank = self.stamps(modality)
        truth = truth or self.truth(t_s)
        scale = (exposure_ms or self.config.camera.exposure_ms) / self.config.camera.exposure_ms
        image = np.full(self.frame_shape, self.config.camera.background_e * scale, dtype=np.float32)
        pos = truth.positions_um
        return add_stamps(
            image, bank, pos[:, 1:] / self.pixel_size_um, pos[:, 0] - focus_z_um, self.worm.size_class,
            truth.brightness * scale,
        )  # fmt: skip

    def noise_seed(self, t_s: float, focus_z_um: float, modality: str = "widefield") -> int:
        """The noise seed of one exposure, a pure function of (seed, t to 1 us, focus to 0.1 nm, modality)."""
        key = f"{self.config.seed}|{round(t_s * 1e6)}|{round(focus_z_um * 1e4)}|{modality}".encode()
        return zlib.crc32(key) | (zlib.adler32(key) << 32)

    def render(
        self,
        t_s: float,
        focus_z_um: float,
        *,
        noise: bool = True,
        modality: str = "widefield",
        exposure_ms: float | None = None,
    ) -> np.ndarray:
        """One camera frame: uint16 with noise, else float32 expected ADU (offset included, same scale)."""
        electrons = self.expected_electrons(t_s, focus_z_um, modality=modality, exposure_ms=exposure_ms)
        if not noise:
            return self.camera.expected_adu(electrons)
        return self.camera.digitize(electrons, self.noise_seed(t_s, focus_z_um, modality))

    def focal_stack(
        self, t_s: float, z_um: Sequence[float], *, noise: bool, modality: str = "widefield"
    ) -> np.ndarray:
        """(Z, H, W) frames of the sample frozen at time t, one per focus z (uint16/float32 like render)."""
        truth = self.truth(t_s)
        planes = []
        for z in z_um:
            electrons = self.expected_electrons(t_s, float(z), modality=modality, truth=truth)
            planes.append(
                self.camera.digitize(electrons, self.noise_seed(t_s, float(z), modality))
                if noise
                else self.camera.expected_adu(electrons)
            )
        return (
            np.stack(planes)
            if planes
            else np.empty((0, *self.frame_shape), np.uint16 if noise else np.float32)
        )
