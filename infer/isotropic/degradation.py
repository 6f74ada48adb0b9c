"""Self-Net's axial degradation, as a fitted parametric model instead of the paper's adversarial network.

Model: the axial PSF is the lateral one convolved with a Gaussian of std ``sigma_um`` along z; the volume is
sampled every ``z_step_um`` (with white noise ``noise`` at each sample) and linearly interpolated back onto
the lateral pixel grid. ``fit_degradation`` finds ``sigma_um`` from the volume itself: lateral lines degraded
by the model must have the same power spectrum as the recorded axial lines.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from infer.isotropic.errors import IsotropicInputError

_MAX_LINES = 20000
_SIGMA_GRID = 61
_SCALE_GRID = np.geomspace(0.5, 2.0, 31)


def sample_rows(array: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Rows of `array` at fractional row positions, linearly interpolated (positions clamped to the rows)."""
    n = array.shape[0]
    if n == 1:
        return np.repeat(array, len(positions), axis=0)
    pos = np.clip(np.asarray(positions, np.float64), 0, n - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    w = (pos - i0).astype(array.dtype).reshape(-1, *([1] * (array.ndim - 1)))
    return array[i0] * (1 - w) + array[i0 + 1] * w


def noise_sigma(volume: np.ndarray) -> float:
    """White-noise std of a (Z, Y, X) volume from neighbouring-pixel differences along x (robust)."""
    diff = np.diff(volume[:, :, :].astype(np.float32), axis=-1)
    return float(1.4826 * np.median(np.abs(diff - np.median(diff))) / np.sqrt(2))


@dataclass(frozen=True)
class AxialDegradation:
    """Extra axial blur, axial sampling and noise that turn a lateral image into what an axial slice shows."""

    sigma_um: float
    z_step_um: float
    pixel_um: float
    noise: float = 0.0  # std of the white noise at each axial sample, in the units of the degraded data

    def __post_init__(self) -> None:
        if self.sigma_um < 0 or self.z_step_um <= 0 or self.pixel_um <= 0 or self.noise < 0:
            raise IsotropicInputError(f"invalid degradation parameters: {self}")

    def to_dict(self) -> dict[str, float]:
        """Plain dict (for the model manifest)."""
        return asdict(self)

    @property
    def _blur_px(self) -> float:
        return self.sigma_um / self.pixel_um

    def blur(self, image: np.ndarray, axis: int = 0) -> np.ndarray:
        """The extra axial blur applied along `axis` of a lateral image."""
        if self._blur_px <= 0:
            return image
        return gaussian_filter1d(image, self._blur_px, axis=axis, mode="reflect", truncate=3.0)

    def added_noise(self) -> float:
        """Noise to add at each sample so that blurred (smoothed) lateral noise reaches `noise`."""
        if self._blur_px <= 0:
            return 0.0
        x = np.arange(-int(3 * self._blur_px) - 1, int(3 * self._blur_px) + 2)
        k = np.exp(-(x**2) / (2 * self._blur_px**2))
        gain = float(np.sum((k / k.sum()) ** 2))
        return self.noise * np.sqrt(max(1 - gain, 0.0))

    def apply(self, image: np.ndarray, rng: np.random.Generator, phase_um: float = 0.0) -> np.ndarray:
        """Degrade axis 0 of a lateral image (rows = pixels) as z is degraded; same shape, float32.

        Rows before the first and after the last sample hold the nearest sample (not valid training data).
        """
        image = np.asarray(image, np.float32)
        step = self.z_step_um / self.pixel_um
        positions = np.arange(phase_um / self.pixel_um, image.shape[0] - 1 + 1e-9, step)
        samples = sample_rows(self.blur(image), positions)
        if (extra := self.added_noise()) > 0:
            samples = samples + rng.normal(0, extra, samples.shape).astype(np.float32)
        return sample_rows(samples, (np.arange(image.shape[0]) - positions[0]) / step)


def _periodogram(lines: np.ndarray, length: int) -> np.ndarray:
    """Mean Hann-windowed power spectrum (white noise of variance v -> v) of (N, n) lines, in segments."""
    n = lines.shape[1]
    starts = range(0, n - length + 1, max(length // 2, 1))
    segments = np.concatenate([lines[:, s : s + length] for s in starts])
    segments = segments - segments.mean(axis=1, keepdims=True)
    window = np.hanning(length + 2)[1:-1]
    power = np.abs(np.fft.rfft(segments * window, axis=1)) ** 2 / np.sum(window**2)
    return power.mean(axis=0)


def _lines(array: np.ndarray, seed: int) -> np.ndarray:
    """(N, n) rows of a 2D array, at most _MAX_LINES of them chosen at random (the same ones for a seed)."""
    if len(array) > _MAX_LINES:
        array = array[np.random.default_rng(seed).choice(len(array), _MAX_LINES, replace=False)]
    return array


def fit_degradation(
    volume: np.ndarray, voxel_um: tuple[float, float, float], *, seed: int = 0
) -> AxialDegradation:
    """Fit the extra axial blur of a (Z, Y, X) volume so that degraded lateral lines match axial lines."""
    dz, _dy, dx = voxel_um
    volume = np.asarray(volume, np.float32)
    noise = noise_sigma(volume)
    step = dz / dx
    lateral_samples = [int((volume.shape[a] - 1) / step) + 1 for a in (1, 2)]
    length = min(volume.shape[0], max(lateral_samples))
    if length < 6:
        raise IsotropicInputError(
            f"volume {volume.shape} at voxel {voxel_um} um has too few axial samples along z, y or x "
            f"({volume.shape[0]}, {lateral_samples}) to fit an axial degradation; use at least 6 planes "
            f"and a lateral field of at least {6 * dz:.1f} um"
        )
    axial = _periodogram(_lines(volume.reshape(volume.shape[0], -1).T, seed), length)[1:]
    sigmas = np.linspace(0, 3 * dz, _SIGMA_GRID)
    best = (np.inf, 0.0)
    for sigma in sigmas:
        model = AxialDegradation(sigma, dz, dx, noise)
        spectra = []
        for axis, n_samples in zip((1, 2), lateral_samples, strict=True):
            if n_samples < length:
                continue
            moved = np.moveaxis(model.blur(volume, axis=axis), axis, 0)
            sampled = sample_rows(moved, np.arange(n_samples) * step)
            spectra.append(_periodogram(_lines(sampled.reshape(n_samples, -1).T, seed), length)[1:])
        lateral = np.mean(spectra, axis=0)
        predicted = _SCALE_GRID[:, None] * lateral[None] + model.added_noise() ** 2
        errors = np.mean((np.log(predicted) - np.log(axial)[None]) ** 2, axis=1)
        if errors.min() < best[0]:
            best = (float(errors.min()), float(sigma))
    return AxialDegradation(best[1], dz, dx, noise)
