"""Neuron activity: mean intensity in a small sphere per neuron; dF/F over a running-percentile baseline,
optionally followed slowly (a baseline that moves with the activity it holds bends every trace), and
optionally denoised causally against each trace's own noise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from track.volume import CheckedVolume, as_volume_tensor, gather_windows

__all__ = [
    "ActivityConfig", "RunningDff", "dff_traces", "kalman_gain", "sample_intensity", "volume_background"
]


@dataclass(frozen=True)
class ActivityConfig:
    """Sampling sphere and running baseline (window in samples, percentile, floors against division by ~0).

    The baseline F0 is at least `noise_floor` times the trace's own noise (the robust standard deviation of
    its sample-to-sample changes over the same window), so a dim or false detection, whose background-
    subtracted baseline is close to zero, gives dF/F of order one instead of hundreds.

    With ``baseline_tau`` > 0, F0 is the window's percentile for a track's first ``baseline_settle``
    samples, then follows it with that time constant (samples): slow changes such as bleaching are tracked,
    while the percentile's early swings (a window of a few seconds holds more activity than baseline) are
    not passed on to the trace.

    With ``common_tau`` > 0 as well, F0 is each track's own level, followed with ``baseline_tau``, times a
    trend shared by all tracks, which follows the settled tracks' median ratio of percentile to level with
    ``common_tau``. Bleaching and lamp drift dim every neuron in the field alike, so the trend can follow
    them quickly from the whole population, while each neuron's own level, whose percentile swings with its
    activity, is held steady.

    With ``denoise_step`` > 0, each track's dF/F is followed causally with the steady-state Kalman gain of a
    random walk of that step (dF/F per sample) observed through the track's own noise (its robust noise over
    F0): a quiet trace passes almost unchanged, a noisy one is averaged over a few samples.
    """

    radius_um: float = 1.2
    baseline_window: int = 300
    baseline_percentile: float = 20.0
    baseline_every: int = 10  # recompute the window's percentile every this many samples (cost)
    min_baseline: float = 1.0  # absolute floor of F0 (intensity units)
    noise_floor: float = 3.0  # F0 >= noise_floor * trace noise
    baseline_tau: int = 0  # samples; 0: F0 is the window's percentile itself
    baseline_settle: int = 100  # samples of a track before F0 starts following with baseline_tau
    common_tau: int = 0  # samples; > 0: a trend shared by all tracks follows their median with it
    denoise_step: float = 0.0  # dF/F per sample; > 0: each trace is denoised with a Kalman gain (above)

    def __post_init__(self) -> None:
        if min(self.baseline_window, self.baseline_settle) < 1 or min(self.baseline_tau, self.common_tau) < 0:
            raise ValueError(
                "baseline_window and baseline_settle must be >= 1, baseline_tau and common_tau >= 0."
            )
        if not self.denoise_step >= 0:
            raise ValueError(f"denoise_step must be >= 0 (0: no denoising), got {self.denoise_step}.")

    def follow_rate(self) -> float:
        """Share of the way F0 moves towards the window's percentile per sample once settled (1: at once)."""
        return 1.0 if self.baseline_tau == 0 else float(-np.expm1(-1.0 / self.baseline_tau))

    def trend_rate(self) -> float:
        """Share of the way the shared trend moves to the tracks' median ratio per sample (0: no trend)."""
        return 0.0 if self.common_tau == 0 else float(-np.expm1(-1.0 / self.common_tau))


TREND_MIN_TRACKS = 10
"""Settled tracks the shared dF/F trend needs before it moves (ActivityConfig.common_tau)."""

# robust standard deviation of a series from the median absolute change between consecutive samples:
# sigma = 1.4826 * median|x_t - x_(t-1)| / sqrt(2) for white noise
_MAD_OF_CHANGES_TO_SIGMA = 1.4826 / np.sqrt(2.0)


def volume_background(volume: torch.Tensor) -> float:
    """Robust background level of a volume: the median of a strided subsample (most voxels are not nuclei)."""
    flat = volume.reshape(-1)
    return float(flat[:: max(1, flat.numel() // 200_000)].median())


def sample_intensity(
    volume: np.ndarray | torch.Tensor | CheckedVolume,
    positions_um: np.ndarray,
    voxel_um: Sequence[float],
    *,
    radius_um: float = 1.2,
    origin_um: Sequence[float] = (0.0, 0.0, 0.0),
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Mean background-subtracted intensity inside a sphere of radius_um around each position (N,) -> (N,)."""
    vol = as_volume_tensor(volume, device)
    pos = np.asarray(positions_um, dtype=np.float64).reshape(-1, 3)
    if len(pos) == 0:
        return np.zeros(0, np.float32)
    voxel = np.asarray(voxel_um, dtype=np.float64)
    radius = tuple(int(r) for r in np.maximum(0, np.floor(radius_um / voxel)))
    centres = torch.as_tensor(
        np.rint((pos - np.asarray(origin_um)) / voxel), dtype=torch.long, device=vol.device
    )
    windows, offsets, inside = gather_windows(vol, centres, radius)
    dist2 = ((offsets.double() * torch.as_tensor(voxel, device=vol.device)) ** 2).sum(-1)
    mask = inside & (dist2 <= radius_um**2)[None]
    total = (windows * mask).sum(dim=(1, 2, 3))
    count = mask.sum(dim=(1, 2, 3)).clamp(min=1)
    return ((total / count) - volume_background(vol)).float().cpu().numpy()


class RunningDff:
    """Per-track dF/F = (F - F0) / F0 with F0 the running percentile of the track's last `window` samples."""

    def __init__(self, config: ActivityConfig | None = None) -> None:
        self.config = config or ActivityConfig()
        self._slot: dict[int, int] = {}
        self._free: list[int] = []
        self._buffer = np.zeros((0, self.config.baseline_window), np.float64)
        self._count = np.zeros(0, np.int64)
        self._baseline = np.zeros(0, np.float64)
        self._followed = np.zeros(0, np.float64)  # each track's level: F0 before the trend and the floors
        self._noise = np.zeros(0, np.float64)
        self._denoised = np.zeros(0, np.float64)  # each track's last dF/F (ActivityConfig.denoise_step)
        self._trend = 1.0  # shared by all tracks (ActivityConfig.common_tau)

    def _slots_for(self, ids: np.ndarray) -> np.ndarray:
        for i in ids.tolist():
            if i in self._slot:
                continue
            if not self._free:
                grow = max(16, len(self._count))
                start = len(self._count)
                self._buffer = np.vstack([self._buffer, np.zeros((grow, self._buffer.shape[1]))])
                self._count = np.concatenate([self._count, np.zeros(grow, np.int64)])
                self._baseline = np.concatenate([self._baseline, np.zeros(grow)])
                self._followed = np.concatenate([self._followed, np.zeros(grow)])
                self._noise = np.concatenate([self._noise, np.zeros(grow)])
                self._denoised = np.concatenate([self._denoised, np.zeros(grow)])
                self._free.extend(range(start + grow - 1, start - 1, -1))
            slot = self._free.pop()
            self._count[slot] = 0
            self._slot[i] = slot
        return np.array([self._slot[i] for i in ids.tolist()], dtype=np.int64)

    def update(self, ids: np.ndarray, intensity: np.ndarray) -> np.ndarray:
        """Add one sample per id and return its dF/F (N,)."""
        ids = np.asarray(ids, dtype=np.int64)
        values = np.asarray(intensity, dtype=np.float64)
        if ids.shape != values.shape:
            raise ValueError(f"ids {ids.shape} and intensity {values.shape} must have the same length.")
        slots = self._slots_for(ids)
        window = self._buffer.shape[1]
        self._buffer[slots, self._count[slots] % window] = values
        self._count[slots] += 1
        count = self._count[slots]
        every = max(1, self.config.baseline_every)
        partial = count <= window
        due = slots[~partial & ((count - window) % every == 0)]
        if len(due):
            oldest_first = (self._count[due, None] + np.arange(window)[None]) % window
            self._refresh(due, np.take_along_axis(self._buffer[due], oldest_first, axis=1))
        # a filling window: every sample for the first `every`, then every `every`-th; tracks of the same age
        # share one refresh (a readout's neurons all have the same age: one call, not one per neuron)
        filling = partial & ((count <= every) | (count % every == 0))
        for age in np.unique(count[filling]).tolist():
            rows = slots[filling & (count == age)]
            self._refresh(rows, self._buffer[rows, :age])
        target = self._baseline[slots]
        settled = count > self.config.baseline_settle
        followed = self._followed[slots]
        self._trend = _next_trend(self._trend, target[settled], followed[settled], self.config)
        target = target / self._trend
        followed = np.where(settled, followed + self.config.follow_rate() * (target - followed), target)
        self._followed[slots] = followed
        f0 = _f0(followed * self._trend, self._noise[slots], self.config)
        dff = (values - f0) / f0
        if self.config.denoise_step > 0:
            gain = kalman_gain(self.config.denoise_step, self._noise[slots] / f0)
            last = self._denoised[slots]
            dff = np.where(count == 1, dff, last + gain * (dff - last))  # a track starts at its first sample
            self._denoised[slots] = dff
        return dff.astype(np.float32)

    def _refresh(self, slots: np.ndarray, samples: np.ndarray) -> None:
        """Recompute baseline and noise of `slots` from their samples (rows, oldest first)."""
        self._baseline[slots] = np.percentile(samples, self.config.baseline_percentile, axis=1)
        changes = np.abs(np.diff(samples, axis=1))
        self._noise[slots] = _MAD_OF_CHANGES_TO_SIGMA * np.median(changes, axis=1) if changes.shape[1] else 0.0

    def track_ids(self) -> np.ndarray:
        """The IDs of the tracks with a baseline kept now."""
        return np.fromiter(self._slot, np.int64, len(self._slot))

    def forget(self, ids: np.ndarray) -> None:
        """Release the buffers of finished tracks."""
        for i in np.asarray(ids, dtype=np.int64).tolist():
            slot = self._slot.pop(i, None)
            if slot is not None:
                self._free.append(slot)


def _next_trend(trend: float, percentile: np.ndarray, level: np.ndarray, cfg: ActivityConfig) -> float:
    """The shared trend one sample on: towards the median ratio of settled tracks' percentile to level (held
    while fewer than TREND_MIN_TRACKS tracks are settled: too few to tell a shared dimming from activity)."""
    usable = (percentile > 0) & (level > 0)
    if cfg.common_tau == 0 or usable.sum() < TREND_MIN_TRACKS:
        return trend
    return trend + cfg.trend_rate() * (float(np.median(percentile[usable] / level[usable])) - trend)


def _f0(baseline: np.ndarray, noise: np.ndarray, cfg: ActivityConfig) -> np.ndarray:
    """F0 = max(baseline, noise_floor * noise, min_baseline)."""
    return np.maximum(np.maximum(baseline, cfg.noise_floor * np.nan_to_num(noise)), cfg.min_baseline)


def kalman_gain(step: float, noise: np.ndarray) -> np.ndarray:
    """Steady-state Kalman gain of a random walk with ``step`` sd per sample observed with ``noise`` sd: the
    share of each new sample's difference from the running estimate that the estimate takes (1 without
    noise)."""
    ratio = 4 * np.square(np.nan_to_num(noise)) / step**2  # 4 / lambda, lambda = (step / noise)^2
    return 2.0 / (1.0 + np.sqrt(1.0 + ratio))


def _denoised(dff: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """(M, T) dF/F followed causally with the (M, T) gains (RunningDff's denoising); NaN samples stay NaN and
    hold the estimate."""
    out = np.full_like(dff, np.nan)
    last = np.full(dff.shape[0], np.nan)
    for t in range(dff.shape[1]):
        sample = dff[:, t]
        seen = np.isfinite(sample)
        last = np.where(seen, np.where(np.isfinite(last), last + gain[:, t] * (sample - last), sample), last)
        out[seen, t] = last[seen]
    return out


def dff_traces(intensity: np.ndarray, config: ActivityConfig | None = None) -> np.ndarray:
    """Offline dF/F of (M, T) intensity traces (NaN = not observed), same trailing running percentile, slow
    following and floor."""
    cfg = config or ActivityConfig()
    frame = pd.DataFrame(np.asarray(intensity, dtype=np.float64).T)
    baseline = frame.rolling(cfg.baseline_window, min_periods=1).quantile(cfg.baseline_percentile / 100.0)
    changes = frame.diff().abs().rolling(max(1, cfg.baseline_window - 1), min_periods=1).median()
    noise = _MAD_OF_CHANGES_TO_SIGMA * changes.to_numpy().T
    f0 = _f0(_followed(baseline.to_numpy().T, np.isfinite(intensity), cfg), noise, cfg)
    dff = (intensity - f0) / f0
    if cfg.denoise_step > 0:
        dff = _denoised(dff, kalman_gain(cfg.denoise_step, noise / f0))
    return dff.astype(np.float32)


def _followed(baseline: np.ndarray, observed: np.ndarray, cfg: ActivityConfig) -> np.ndarray:
    """(M, T) F0 of ``baseline`` (M, T) followed as RunningDff does: itself for each track's first
    baseline_settle observed samples, then moving towards it at follow_rate per observed sample; times the
    trend shared by the tracks observed at each sample (common_tau)."""
    if cfg.baseline_tau == 0 and cfg.common_tau == 0:
        return baseline
    level = baseline.copy()
    trend = np.ones(baseline.shape[1])
    count = np.cumsum(observed, axis=1)
    rate = cfg.follow_rate()
    for t in range(baseline.shape[1]):
        last = level[:, max(t - 1, 0)]
        step = observed[:, t] & (count[:, t] > cfg.baseline_settle)
        trend[t] = _next_trend(trend[max(t - 1, 0)], baseline[step, t], last[step], cfg)
        target = baseline[:, t] / trend[t]
        # an unobserved sample's level carries the last one on (a NaN window percentile is left as it is)
        carried = np.where(observed[:, t], target, last)
        level[:, t] = np.where(step, last + rate * (target - last), carried)
    return level * trend[None]
