"""`deepz evaluate-activity`: every per-neuron activity method on one simulated run with truth.

Methods (all scored by deepz.lab.activity_score at their own output times):
- ``demix``: track.readout.LiveReadout on every frame at focus, after a calibration scan (the live default);
- ``virtual-sample``: the shipped Deep-Z model's virtual volume, sampled at the demix readout's tracked
  positions (track.activity sphere sampling), on every ``virtual_every``-th frame (CPU cost);
- ``virtual-detect``: today's path, detection and tracking (track.live.LiveTracker) in those virtual volumes;
- ``zscan``: a mechanical focal scan at the same camera rate (``zscan_planes`` planes per volume, each plane
  its own exposure at its own time), detected and tracked volume by volume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch

from acquire.sim import WormSimulator
from deepz.lab.activity_score import ActivityScorer, NeuronScores
from deepz.lab.scaffold import shipped_deepz
from track.activity import ActivityConfig, RunningDff, sample_intensity
from track.live import LiveTracker, LiveTrackerConfig
from track.online import TrackerConfig
from track.readout import LiveReadout, Optics, ReadoutConfig

__all__ = ["ActivityRunConfig", "DEFAULT_METHOD", "METHODS", "evaluate_activity", "noise_ceiling"]

DEFAULT_METHOD = "demix"
METHODS = ("demix", "virtual-sample", "virtual-detect", "zscan")


@dataclass(frozen=True)
class ActivityRunConfig:
    """One simulated run: duration, camera rate, calibration scan, z-scan and Deep-Z sampling settings."""

    seconds: float = 60.0
    rate_hz: float = 100.0
    scan_range_um: tuple[float, float] = (-12.0, 12.0)
    scan_step_um: float = 0.5
    zscan_planes: int = 32
    zscan_range_um: tuple[float, float] = (-10.0, 10.0)
    virtual_every: int = 50  # frames between Deep-Z volumes; 0 = skip the Deep-Z methods
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.rate_hz <= 0 or self.scan_step_um <= 0 or self.zscan_planes < 2:
            raise ValueError("seconds, rate and scan step must be positive and zscan_planes >= 2.")
        if self.virtual_every < 0:
            raise ValueError("virtual_every must be >= 0 (0 skips the Deep-Z methods).")

    @property
    def n_frames(self) -> int:
        return max(1, round(self.seconds * self.rate_hz))


def _scan(sim: WormSimulator, cfg: ActivityRunConfig) -> tuple[np.ndarray, np.ndarray, float]:
    """The calibration scan as a rig takes it: one exposure per plane at successive camera times from t=0."""
    z = np.arange(cfg.scan_range_um[0], cfg.scan_range_um[1] + cfg.scan_step_um / 2, cfg.scan_step_um)
    stack = np.stack([sim.render(k / cfg.rate_hz, float(zk)) for k, zk in enumerate(z)])
    return stack, z, len(z) / cfg.rate_hz


def _optics(sim: WormSimulator) -> Optics:
    """The nominal optics of the simulated microscope (what a rig's objective and filters say)."""
    o = sim.config.optics
    return Optics(na=o.na, wavelength_um=o.emission_um, sample_index=o.sample_index)


def noise_ceiling(
    brightness: dict[int, list[float]], error: dict[int, list[float]], r: list[float], owners: list[int]
) -> dict[str, object]:
    """The trace r the demixing's own noise allows each traced neuron: sqrt(1 - noise variance / trace
    variance), with the noise variance from the fit's standard errors (its Cramer-Rao bound under the
    model). An r far below it is model error (stamps, motion); an r near it is photon noise."""
    ceiling, achieved = [], []
    for owner, r_owner in zip(owners, r, strict=True):
        if owner < 0:
            continue  # no trace: no noise level to compare with
        achieved.append(r_owner)
        b, e = np.asarray(brightness[owner]), np.asarray(error[owner])
        ok = np.isfinite(b) & np.isfinite(e)
        variance = float(np.var(b[ok])) if ok.sum() > 2 else 0.0
        noise = float(np.mean(e[ok] ** 2)) if ok.any() else float("inf")
        ceiling.append(float(np.sqrt(max(0.0, 1.0 - noise / variance))) if variance > 0 else 0.0)
    c = np.asarray(ceiling)
    return {
        "median_r_ceiling": float(np.median(c)) if len(c) else float("nan"),
        "fraction_ceiling_ge_0_9": float(np.mean(c >= 0.9)) if len(c) else float("nan"),
        "median_shortfall": float(np.median(c - np.asarray(achieved))) if len(c) else float("nan"),
        "note": "per traced neuron: sqrt(1 - mean squared standard error / variance of its brightness trace),"
        " the r that noise alone would leave; shortfall = ceiling - achieved r",
    }


def evaluate_activity(
    sim: WormSimulator, cfg: ActivityRunConfig, progress: Callable[[int], None] | None = None,
    methods: tuple[str, ...] = METHODS,
) -> tuple[dict[str, NeuronScores], dict[str, object]]:
    """Run every method on one simulated specimen; per-method raw scores and run facts (timings, notes).

    If interrupted (KeyboardInterrupt), scores what it has and returns it with ``"interrupted": True``.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}.")
    px = sim.pixel_size_um
    h, w = sim.frame_shape
    scorer = ActivityScorer((h * px, w * px))
    info: dict[str, object] = {"run": asdict(cfg), "seconds_per_method": {m: 0.0 for m in methods}}
    timing = info["seconds_per_method"]
    stack, z, t_start = _scan(sim, cfg)
    readout = LiveReadout(ReadoutConfig(activity=ActivityConfig(baseline_window=round(10 * cfg.rate_hz),
                                                                baseline_every=50)), device=cfg.device)
    t0 = time.perf_counter()
    reference = readout.calibrate(stack, z, px, _optics(sim))
    info["calibration"] = {
        "planes": len(z), "z_um": [float(z[0]), float(z[-1])], "step_um": cfg.scan_step_um,
        "scan_seconds": t_start, "neurons_found": len(reference), "fit_residual": reference.fit_residual,
        "seconds": time.perf_counter() - t0,
        "note": "each scan plane is its own exposure at its own time t = k / rate (the worm moves during it)",
    }  # fmt: skip
    zplanes = np.linspace(cfg.zscan_range_um[0], cfg.zscan_range_um[1], cfg.zscan_planes)
    dz = float(zplanes[1] - zplanes[0])
    slow_rate = cfg.rate_hz / max(1, cfg.virtual_every)
    volume_tracking = LiveTrackerConfig(
        voxel_um=(dz, px, px), origin_um=(float(zplanes[0]), 0.0, 0.0), tracker=TrackerConfig(max_gap=6)
    )
    zscan = LiveTracker(volume_tracking, device=cfg.device)
    zscan_planes: list[np.ndarray] = []
    use_virtual = cfg.virtual_every > 0 and ({"virtual-sample", "virtual-detect"} & set(methods))
    if use_virtual:
        deepz, deepz_info = shipped_deepz((h, w), zplanes, device=cfg.device)
        info["deep_z"] = {
            **deepz_info, "every_frames": cfg.virtual_every, "volumes_per_s": slow_rate,
            "note": "Deep-Z runs on a subsampled set of frames (CPU cost); both virtual methods are "
            "scored at those frames only",
        }  # fmt: skip
        detect_virtual = LiveTracker(volume_tracking, device=cfg.device)
        sample_dff = RunningDff(ActivityConfig(baseline_window=max(10, round(30 * slow_rate))))
    info["interrupted"] = False
    demixed: dict[int, list[float]] = {}
    demix_error: dict[int, list[float]] = {}
    done = 0
    try:
        for k in range(cfg.n_frames):
            t_s = t_start + k / cfg.rate_hz
            frame = sim.render(t_s, 0.0)
            truth = sim.truth(t_s)
            t0 = time.perf_counter()
            state = readout.update(frame, t_s)
            timing["demix"] = timing.get("demix", 0.0) + time.perf_counter() - t0
            if "demix" in methods:
                scorer.add("demix", truth, state.ids, state.positions_um, state.dff)
                error = state.brightness / np.where(state.confidence > 0, state.confidence, np.nan)
                for i, b, e in zip(state.ids.tolist(), state.brightness, error, strict=True):
                    demixed.setdefault(i, []).append(float(b))
                    demix_error.setdefault(i, []).append(float(e))
            if use_virtual and k % cfg.virtual_every == 0:
                t0 = time.perf_counter()
                volume = deepz.run(frame[None])[0]
                spent = time.perf_counter() - t0
                if "virtual-sample" in methods:
                    t0 = time.perf_counter()
                    origin = (float(zplanes[0]), 0.0, 0.0)
                    values = sample_intensity(volume, state.positions_um, (dz, px, px), origin_um=origin)
                    dff = sample_dff.update(state.ids, values)
                    timing["virtual-sample"] += spent + time.perf_counter() - t0
                    scorer.add("virtual-sample", truth, state.ids, state.positions_um, dff)
                if "virtual-detect" in methods:
                    t0 = time.perf_counter()
                    tracked = detect_virtual.process(k // cfg.virtual_every, volume)
                    timing["virtual-detect"] += spent + time.perf_counter() - t0
                    scorer.add("virtual-detect", truth, tracked.ids, tracked.positions_um, tracked.dff)
            if "zscan" in methods:
                zscan_planes.append(sim.render(t_s, float(zplanes[k % cfg.zscan_planes])))
                if len(zscan_planes) == cfg.zscan_planes:
                    t0 = time.perf_counter()
                    tracked = zscan.process(k // cfg.zscan_planes, np.stack(zscan_planes))
                    timing["zscan"] += time.perf_counter() - t0
                    mid = t_s - (cfg.zscan_planes - 1) / 2 / cfg.rate_hz
                    scorer.add("zscan", sim.truth(mid), tracked.ids, tracked.positions_um, tracked.dff)
                    zscan_planes = []
            done = k + 1
            if progress is not None:
                progress(done)
    except KeyboardInterrupt:
        info["interrupted"] = True
    info["frames_done"] = done
    info["demix_frames_per_s"] = done / max(timing.get("demix", 0.0), 1e-9)
    scores = {m: scorer.neuron_scores(m) for m in scorer.methods}
    if "demix" in scores:
        demix = scores["demix"]
        info["demix_noise_ceiling"] = noise_ceiling(demixed, demix_error, demix.r, demix.owners)
    return scores, info
