"""Calibration for the live readout: which scan a run takes, the readout built from the nominal optics, and
the scans handed to the readout stage (live camera pauses, or the scans a replayed recording holds).

The scan spans the model's axial range by default: the readout's reference must cover the depths the user
sees in the virtual volume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from acquire.calibration_source import CalibratingSource, CalibrationScan
from acquire.mm import MicroManagerSource
from acquire.zstack import z_positions
from deepz.config import CalibrationConfig, RunConfig
from deepz.readout_stage import Calibrator, LiveReadoutLike, PendingScan, ReadoutStage, ThreadCalibrator
from infer.manifest import ModelManifest
from storage.calibration import CalibrationStore, ScanRecord, read_scans


class ScanConsumer(Protocol):
    """Where the calibrating camera's scans go: the readout stage here, or the compute process running one;
    its ``request_scan`` is set to the camera's, for re-scans it asks for."""

    request_scan: Callable[[str], None] | None

    def offer_scan(self, scan: PendingScan) -> None: ...


def calibration_enabled(cfg: RunConfig, manifest: ModelManifest) -> bool:
    """The config's choice; by default on for the simulated microscope with a refocusing model."""
    if cfg.calibration.enabled is not None:
        return cfg.calibration.enabled
    return cfg.source.mm_config is None and manifest.task == "refocus"


def scan_offsets(cfg: CalibrationConfig, manifest: ModelManifest) -> np.ndarray:
    """Focus offsets (um) of a calibration scan: the configured range and step, else the model's own."""
    low, high = cfg.z_range_um or (-manifest.axial_range_um, manifest.axial_range_um)
    return z_positions(low, high, cfg.step_um or manifest.axial_step_um)


def readout_optics(manifest: ModelManifest) -> Any:
    """The nominal optics a rig knows (NA, emission wavelength), as the readout library takes them."""
    from track.readout.stamps import Optics

    return Optics(na=manifest.optics.numerical_aperture, wavelength_um=manifest.optics.wavelength_um)


def build_readout(device: str = "cpu", rate_hz: float = 100.0) -> LiveReadoutLike:
    """The readout deepz live uses (track.readout's default method), on the inference engine's device, with
    its dF/F baseline in seconds of a camera at ``rate_hz``."""
    from track.readout.live import LiveReadout, ReadoutConfig, camera_rate_dff

    return LiveReadout(ReadoutConfig(activity=camera_rate_dff(rate_hz)), device=device)


def live_calibrator(cfg: CalibrationConfig, readout: LiveReadoutLike, device: str = "cpu") -> Calibrator:
    """Where the live run calibrates ``readout`` (on ``device``) beside it (``cfg.worker``): in a process of
    its own, or in a thread. On a GPU both are launch-bound Python, so in one process they take turns on its
    interpreter (a calibration took 4.2-4.6 s beside the readout on an H200, 2.5 s alone); on a CPU their
    arithmetic releases it, and a process read no more frames beside a re-calibration than a thread did."""
    if cfg.worker == "thread" or (cfg.worker == "auto" and not device.startswith("cuda")):
        return ThreadCalibrator()
    from deepz.calibration_process import CalibrationProcess
    from track.readout.live import NeuronIds

    return CalibrationProcess(shared=(NeuronIds,), preload=(type(readout).__module__,), device=device)


def live_scan(cal: CalibrationScan) -> PendingScan:
    """A scan the calibrating camera source took, as the readout stage's input."""
    pause, scan = cal.pause, cal.scan
    record = ScanRecord(
        index=pause.index,
        reason=pause.reason,
        focus_um=scan.focus_um,
        z_um=[float(z) for z in scan.z_um],
        stage_um=[float(z) for z in scan.stage_um],
        pixel_size_um=cal.pixel_size_um,
        frame_index=pause.frame_index,
        start_host_s=pause.start_host_s,
        end_host_s=pause.end_host_s,
        pause_s=round(pause.duration_s, 4) if pause.reason != "start" else 0.0,
        frames_cost=pause.frames_cost,
    )
    return PendingScan(record, scan.stack)


def recorded_scans(recording: Path) -> list[PendingScan]:
    """The scans a recording holds, each applied again before the frame it preceded."""
    return [PendingScan(s.record, s.stack) for s in read_scans(recording)]


def build_readout_stage(
    cfg: RunConfig, manifest: ModelManifest, *, replay_from: Path | None, device: str | None,
    frame_interval_s: float,
) -> ReadoutStage | None:
    """The readout stage of a run, or None: live when calibration is on, replay when the recording holds
    scans; never when calibration or neuron tracking is turned off. Its scans go to the run's recording;
    ``frame_interval_s``: the camera's (live) or the recording's (replay)."""
    if cfg.calibration.enabled is False or not cfg.tracking.enabled:
        return None
    scans = recorded_scans(replay_from) if replay_from is not None else []
    wanted = bool(scans) if replay_from is not None else calibration_enabled(cfg, manifest)
    if not wanted:
        return None
    out, device = cfg.recording.out, device or "cpu"
    readout = build_readout(device, 1.0 / frame_interval_s)
    stage = ReadoutStage(
        readout,
        optics=readout_optics(manifest),
        trace_window_s=cfg.tracking.trace_window_s,
        store=CalibrationStore(out).write if out is not None else None,
        drift_um=cfg.calibration.drift_um,
        # replay reads every frame with the reference it had live; live never holds the readout thread
        calibrator=None if replay_from is not None else live_calibrator(cfg.calibration, readout, device),
    )
    for scan in scans:
        stage.offer_scan(scan)
    return stage


def calibrating_source(
    source: MicroManagerSource, cfg: CalibrationConfig, manifest: ModelManifest, stage: ScanConsumer
) -> CalibratingSource:
    """Wrap the camera source so that it scans before streaming and on re-calibration, feeding ``stage``."""
    wrapped = CalibratingSource(
        source,
        scan_offsets(cfg, manifest),
        on_scan=lambda cal: stage.offer_scan(live_scan(cal)),
        interval_s=cfg.interval_s or None,
        settle_ms=cfg.settle_ms,
    )
    stage.request_scan = wrapped.request_scan
    return wrapped
