"""The live readout stage: calibrates the readout from each focal scan, then reads every reference neuron in
every frame it is handed, and keeps the recent dF/F window that viewers are sent.

Scans arrive from the acquisition thread (live: the calibrating camera source) or from a recording (replay)
tagged with the frame index they precede; the stage applies each one in its own thread right before that
frame, so the camera never waits for detection. The first scan calibrates the readout, later ones
re-calibrate it (reference IDs carry over). Each scan is then stored with its reference neurons.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from storage.calibration import ScanRecord

log = logging.getLogger(__name__)

MAX_TRACE_COLUMNS = 600
"""Most recent frames kept in the published dF/F window (bounds message size at 100 Hz)."""


class Reference(Protocol):
    """The readout's reference neurons: stable IDs and positions (z relative to the scan's focus, y, x) in um."""

    ids: np.ndarray
    positions_um: np.ndarray


class ReadoutState(Protocol):
    """The readout of one frame: every reference neuron's position, brightness, dF/F and confidence (SNR)."""

    ids: np.ndarray
    positions_um: np.ndarray
    brightness: np.ndarray
    dff: np.ndarray
    confidence: np.ndarray


class LiveReadoutLike(Protocol):
    """What this stage needs of the readout library (track.readout)."""

    def calibrate(self, stack: np.ndarray, z_um: np.ndarray, pixel_size_um: float, optics: Any) -> Reference: ...

    def recalibrate(self, stack: np.ndarray, z_um: np.ndarray) -> Reference: ...

    def update(self, frame: np.ndarray, t_s: float) -> ReadoutState: ...


@dataclass(frozen=True)
class ReadoutSnapshot:
    """One frame's readout as the pipeline records and publishes it (``intensity`` = brightness)."""

    t: int
    ids: np.ndarray
    positions_um: np.ndarray
    intensity: np.ndarray
    dff: np.ndarray
    confidence: np.ndarray


@dataclass(frozen=True)
class PendingScan:
    """A scan to apply before frame ``record.frame_index``."""

    record: ScanRecord
    stack: np.ndarray


StoreScan = Callable[[ScanRecord, np.ndarray, np.ndarray, np.ndarray], None]


class ReadoutStage:
    """Calibrate from scans, read each frame, remember dF/F over the last ``trace_window_s`` seconds.

    ``store`` (optional) receives each applied scan with its reference (ids, positions); ``drift_um`` with
    ``request_scan``: ask for a new scan when the followed neurons moved (median) that far from the scan's.
    """

    def __init__(
        self,
        readout: LiveReadoutLike,
        *,
        optics: Any,
        trace_window_s: float = 30.0,
        store: StoreScan | None = None,
        drift_um: float | None = None,
        request_scan: Callable[[str], None] | None = None,
    ) -> None:
        self.readout = readout
        self.optics = optics
        self.window_s = trace_window_s
        self.store = store
        self.drift_um = drift_um
        self.request_scan = request_scan
        self.records: list[ScanRecord] = []
        self._pending: collections.deque[PendingScan] = collections.deque()
        self._history: collections.deque[tuple[float, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=MAX_TRACE_COLUMNS
        )
        self._lock = threading.Lock()
        self._calibrated = False
        self._drift_requested = False
        self._anchor: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros((0, 3)))

    # ---------------------------------------------------------------- any thread
    def offer_scan(self, scan: PendingScan) -> None:
        """Queue a scan; it is applied before the first frame whose index reaches ``record.frame_index``."""
        with self._lock:
            self._pending.append(scan)

    def status(self) -> dict[str, Any]:
        """Calibration figures for status lines and viewers (host times in s since the epoch)."""
        with self._lock:
            records = list(self.records)
        last = records[-1] if records else None
        return {
            "calibrations": len(records),
            "last_calibration_host_s": None if last is None else last.end_host_s,
            "reference_neurons": None if last is None else last.n_reference,
            "calibration_pause_s": round(sum(r.pause_s for r in records), 3),
            "calibration_frames_cost": sum(r.frames_cost for r in records),
        }

    def recent_traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids (M,), times (W,) s and dF/F (M, W) over the window, NaN where a neuron had no readout."""
        with self._lock:
            history = list(self._history)
        if not history:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32)
        ids = np.unique(np.concatenate([h[1] for h in history])).astype(np.int64)
        dff = np.full((ids.size, len(history)), np.nan, np.float32)
        for column, (_, step_ids, step_dff) in enumerate(history):
            dff[np.searchsorted(ids, step_ids), column] = step_dff
        return ids, np.array([h[0] for h in history]), dff

    def summary(self) -> dict[str, Any]:
        """The run's calibration figures and every scan's record (for the run summary and the recording)."""
        with self._lock:
            records = [dataclasses.asdict(r) for r in self.records]
        keys = ("index", "reason", "frame_index", "start_host_s", "end_host_s", "pause_s", "frames_cost",
                "n_reference", "focus_um")
        return {**self.status(), "scans": [{k: r[k] for k in keys} for r in records]}

    def finish(self) -> None:
        """After the last frame: apply and store the scans no frame followed, so every scan is recorded."""
        self.apply_scans(2**62)

    # ---------------------------------------------------------------- the readout thread
    def update(self, t: int, time_s: float, frame: np.ndarray) -> ReadoutSnapshot | None:
        """Apply the scans due by frame ``t``, then read it; None before the first calibration."""
        self.apply_scans(t)
        if not self._calibrated:
            return None
        state = self.readout.update(frame, time_s)
        snap = ReadoutSnapshot(
            t=t,
            ids=np.asarray(state.ids, np.int64),
            positions_um=np.asarray(state.positions_um, np.float32).reshape(-1, 3),
            intensity=np.asarray(state.brightness, np.float32),
            dff=np.asarray(state.dff, np.float32),
            confidence=np.asarray(state.confidence, np.float32),
        )
        with self._lock:
            self._history.append((time_s, snap.ids, snap.dff))
            while self._history and time_s - self._history[0][0] > self.window_s:
                self._history.popleft()
        self._check_drift(state)
        return snap

    def apply_scans(self, t: int) -> None:
        """Calibrate (or re-calibrate) from every scan due by frame ``t``, then store it; seconds on a CPU, so
        the pipeline calls it outside the compute lock that update() runs under."""
        while True:
            with self._lock:
                if not self._pending or self._pending[0].record.frame_index > t:
                    return
                scan = self._pending.popleft()
            self._apply(scan)

    def _apply(self, scan: PendingScan) -> None:
        record = scan.record
        z = np.asarray(record.z_um, np.float64)
        started = time.perf_counter()
        if self._calibrated:
            reference = self.readout.recalibrate(scan.stack, z)
        else:
            reference = self.readout.calibrate(scan.stack, z, record.pixel_size_um, self.optics)
            self._calibrated = True
        self._drift_requested = False
        ids = np.asarray(reference.ids, np.int64)
        self._anchor = (ids, np.asarray(reference.positions_um, np.float64).reshape(-1, 3))
        record = dataclasses.replace(record, n_reference=len(ids))
        log.info("calibration %d (%s): %d reference neurons in %.2f s", record.index, record.reason, len(ids),
                 time.perf_counter() - started)
        if self.store is not None:
            self.store(record, scan.stack, ids, np.asarray(reference.positions_um, np.float64))
        with self._lock:
            self.records.append(record)

    def _check_drift(self, state: ReadoutState) -> None:
        """Ask for a re-scan once when the neurons moved (median, 3D) more than ``drift_um`` from the reference."""
        if self.drift_um is None or self.request_scan is None or self._drift_requested:
            return
        ids, anchor = self._anchor
        if len(ids) == 0 or not np.array_equal(ids, state.ids):
            return
        moved = np.linalg.norm(np.asarray(state.positions_um, np.float64) - anchor, axis=1)
        if float(np.median(moved)) > self.drift_um:
            self._drift_requested = True
            self.request_scan("drift")
