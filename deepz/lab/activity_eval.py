"""`deepz evaluate-activity`: every per-neuron activity method on one simulated run with truth.

Methods (all scored by deepz.lab.activity_score at their own output times):
- ``demix``: track.readout.LiveReadout on every frame at focus, as `deepz live` runs it: through the live
  readout stage (deepz.readout_stage) after a calibration scan, with re-scans at an interval or on drift
  (deepz.config.CalibrationConfig's policy, in camera time; reference IDs carry over). A scan's planes take
  camera frames, so those frames have no readout: the readout is scored over the frames it has;
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
from acquire.zstack import z_positions
from deepz.config import CalibrationConfig
from deepz.lab.activity_score import ActivityScorer, NeuronScores
from deepz.lab.scaffold import shipped_deepz
from deepz.readout_stage import PendingScan, ReadoutStage
from storage.calibration import ScanRecord
from track.activity import ActivityConfig, RunningDff, sample_intensity
from track.live import LiveTracker, LiveTrackerConfig
from track.online import TrackerConfig
from track.readout import LiveReadout, Optics, ReadoutConfig, camera_rate_dff

__all__ = ["ActivityRunConfig", "DEFAULT_METHOD", "METHODS", "evaluate_activity", "noise_ceiling"]

DEFAULT_METHOD = "demix"
METHODS = ("demix", "virtual-sample", "virtual-detect", "zscan")
RECALIBRATE_S = 5.0  # the evaluation's default re-scan interval (camera seconds)


@dataclass(frozen=True)
class ActivityRunConfig:
    """One simulated run: duration, camera rate, calibration scans and their policy (as deepz live's
    --recalibrate-s and [calibration] drift_um), z-scan and Deep-Z sampling settings."""

    seconds: float = 60.0
    rate_hz: float = 100.0
    scan_range_um: tuple[float, float] = (-12.0, 12.0)
    scan_step_um: float = 0.5
    recalibrate_s: float = RECALIBRATE_S  # camera s from a scan's end to the next; 0 = never (as interval_s)
    drift_um: float | None = None  # re-scan when the followed neurons moved (median) this far; None = never
    zscan_planes: int = 32
    zscan_range_um: tuple[float, float] = (-10.0, 10.0)
    virtual_every: int = 50  # frames between Deep-Z volumes; 0 = skip the Deep-Z methods
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.seconds <= 0 or self.rate_hz <= 0 or self.scan_step_um <= 0 or self.zscan_planes < 2:
            raise ValueError("seconds, rate and scan step must be positive and zscan_planes >= 2.")
        if self.virtual_every < 0:
            raise ValueError("virtual_every must be >= 0 (0 skips the Deep-Z methods).")
        if self.recalibrate_s < 0 or (self.drift_um is not None and self.drift_um <= 0):
            raise ValueError("recalibrate_s must be >= 0 (0: never) and drift_um positive (None: never).")

    @property
    def n_frames(self) -> int:
        """Camera frames after the first scan (re-scans take some of them)."""
        return max(1, round(self.seconds * self.rate_hz))

    @property
    def scan_seconds(self) -> float:
        """Camera seconds of one calibration scan (a frame per plane): the first frame read comes after it."""
        return len(z_positions(*self.scan_range_um, self.scan_step_um)) / self.rate_hz

    @property
    def calibration(self) -> CalibrationConfig:
        """The run's scans and re-scan policy as deepz live's configuration holds them (validated there)."""
        return CalibrationConfig(z_range_um=self.scan_range_um, step_um=self.scan_step_um,
                                 interval_s=self.recalibrate_s, drift_um=self.drift_um)  # fmt: skip


class _CameraScans:
    """The calibrating camera's scans in camera time, as acquire.calibration_source.CalibratingSource takes
    them live: one before the stream, then after a frame when the readout asked (drift) or ``interval_s``
    after the last scan ended; each plane is one camera frame (exposure) at its own time."""

    def __init__(self, sim: WormSimulator, cfg: CalibrationConfig, rate_hz: float) -> None:
        self.sim, self.cfg, self.rate_hz = sim, cfg, rate_hz
        self.z_um = z_positions(*cfg.z_range_um, cfg.step_um)
        self.records: list[ScanRecord] = []
        self._requested: str | None = None
        self._last_end_s = 0.0

    def request_scan(self, reason: str) -> None:
        """The readout stage's drift request: a scan after the next frame."""
        self._requested = self._requested or reason

    def due(self, t_s: float) -> str | None:
        """Why a scan starts at camera time ``t_s`` (after a readout frame), or None."""
        reason, self._requested = self._requested, None
        interval = self.cfg.interval_s
        if reason is None and interval > 0 and t_s - self._last_end_s >= interval - 1e-9:
            reason = "interval"
        return reason

    def take(self, t_s: float, reason: str, frame_index: int) -> PendingScan:
        """Scan from camera time ``t_s``, to be applied before readout frame ``frame_index``."""
        stack = np.stack([self.sim.render(t_s + i / self.rate_hz, float(z)) for i, z in enumerate(self.z_um)])
        end = t_s + len(self.z_um) / self.rate_hz
        self._last_end_s = end
        cost = 0 if reason == "start" else len(self.z_um)
        record = ScanRecord(
            index=len(self.records), reason=reason, focus_um=0.0, z_um=self.z_um.tolist(),
            stage_um=self.z_um.tolist(), pixel_size_um=self.sim.pixel_size_um, frame_index=frame_index,
            start_host_s=t_s, end_host_s=end, pause_s=0.0 if cost == 0 else end - t_s, frames_cost=cost,
        )  # fmt: skip
        self.records.append(record)
        return PendingScan(record, stack)


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
    """Run every method on one simulated specimen; per-method raw scores and run facts (timings, scans).

    ``progress`` gets the camera frames done (readout frames and scan planes). If interrupted
    (KeyboardInterrupt), scores what it has and returns it with ``"interrupted": True``.
    """
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"Unknown methods {sorted(unknown)}; choose from {METHODS}.")
    px = sim.pixel_size_um
    h, w = sim.frame_shape
    scorer = ActivityScorer((h * px, w * px))
    info: dict[str, object] = {"run": asdict(cfg), "seconds_per_method": {m: 0.0 for m in methods}}
    timing = info["seconds_per_method"]
    readout = LiveReadout(ReadoutConfig(activity=camera_rate_dff(cfg.rate_hz)), device=cfg.device)
    scans = _CameraScans(sim, cfg.calibration, cfg.rate_hz)
    # no calibrator: calibrates in place, as replay does (every frame is read with the reference of its scan)
    stage = ReadoutStage(readout, optics=_optics(sim), drift_um=cfg.drift_um, request_scan=scans.request_scan)
    stage.offer_scan(scans.take(0.0, "start", 0))
    t_start = cfg.scan_seconds
    calibration_s: list[float] = []
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
            "note": "Deep-Z runs on a subsampled set of the readout's frames (CPU cost); both virtual "
            "methods are scored at those frames only",
        }  # fmt: skip
        detect_virtual = LiveTracker(volume_tracking, device=cfg.device)
        sample_dff = RunningDff(ActivityConfig(baseline_window=max(10, round(30 * slow_rate))))
    info["interrupted"] = False
    demixed: dict[int, list[float]] = {}
    demix_error: dict[int, list[float]] = {}
    done = read = 0
    scan_until = -1  # the last camera frame of a re-scan in progress
    try:
        for k in range(cfg.n_frames):
            t_s = t_start + k / cfg.rate_hz
            if k > scan_until:
                t0, scans_before = time.perf_counter(), len(stage.records)
                stage.apply_scans(read)  # a scan due before this frame: (re-)calibrate on it
                if len(stage.records) > scans_before:
                    calibration_s.append(time.perf_counter() - t0)
                frame = sim.render(t_s, 0.0)
                truth = sim.truth(t_s)
                t0 = time.perf_counter()
                snap = stage.update(read, t_s, frame)
                timing["demix"] = timing.get("demix", 0.0) + time.perf_counter() - t0
                if "demix" in methods:
                    scorer.add("demix", truth, snap.ids, snap.positions_um.astype(np.float64), snap.dff)
                    error = snap.intensity / np.where(snap.confidence > 0, snap.confidence, np.nan)
                    for i, b, e in zip(snap.ids.tolist(), snap.intensity, error, strict=True):
                        demixed.setdefault(i, []).append(float(b))
                        demix_error.setdefault(i, []).append(float(e))
                if use_virtual and read % cfg.virtual_every == 0:
                    t0 = time.perf_counter()
                    volume = deepz.run(frame[None])[0]
                    spent = time.perf_counter() - t0
                    if "virtual-sample" in methods:
                        t0 = time.perf_counter()
                        origin = (float(zplanes[0]), 0.0, 0.0)
                        values = sample_intensity(volume, snap.positions_um, (dz, px, px), origin_um=origin)
                        dff = sample_dff.update(snap.ids, values)
                        timing["virtual-sample"] += spent + time.perf_counter() - t0
                        scorer.add("virtual-sample", truth, snap.ids, snap.positions_um, dff)
                    if "virtual-detect" in methods:
                        t0 = time.perf_counter()
                        tracked = detect_virtual.process(read // cfg.virtual_every, volume)
                        timing["virtual-detect"] += spent + time.perf_counter() - t0
                        scorer.add("virtual-detect", truth, tracked.ids, tracked.positions_um, tracked.dff)
                read += 1
                reason = scans.due(t_s + 1 / cfg.rate_hz)
                if reason is not None and k + len(scans.z_um) < cfg.n_frames:  # a scan the run can finish
                    stage.offer_scan(scans.take(t_s + 1 / cfg.rate_hz, reason, read))
                    scan_until = k + len(scans.z_um)
            if "zscan" in methods:  # a camera of its own, stepping through z at every frame
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
    calibrations = stage.summary()
    info["calibration"] = {
        "planes": len(scans.z_um), "z_um": [float(scans.z_um[0]), float(scans.z_um[-1])],
        "step_um": cfg.scan_step_um, "scan_seconds": t_start, "recalibrate_s": cfg.recalibrate_s,
        "drift_um": cfg.drift_um, "scans": calibrations["scans"],
        "frames_cost": calibrations["calibration_frames_cost"], "readout_frames": read,
        "compute_seconds": calibration_s,
        "note": "each scan plane is one camera frame at its own time (the worm moves during it); a re-scan's "
        "frames have no readout (frames_cost); the readout calibrates on a scan before its next frame",
    }  # fmt: skip
    info["frames_done"] = done
    info["demix_frames_per_s"] = read / max(timing.get("demix", 0.0), 1e-9)
    scores = {m: scorer.neuron_scores(m) for m in scorer.methods}
    if "demix" in scores:
        demix = scores["demix"]
        info["demix_noise_ceiling"] = noise_ceiling(demixed, demix_error, demix.r, demix.owners)
    return scores, info
