"""The live readout stage: calibrates the readout from each focal scan, then reads every reference neuron in
every frame it is handed, and keeps the recent dF/F window that viewers are sent.

Scans arrive from the acquisition thread (live: the calibrating camera source) or from a recording (replay)
tagged with the frame index they precede. From that frame on, the readout calibrates on it: the first scan
calibrates, later ones re-calibrate (reference IDs carry over). Calibrating takes seconds, so live a
``Calibrator`` calibrates a copy of the readout (in a process of its own, deepz.calibration_process, or in a
thread) while the readout goes on reading frames with the reference it has (none before the first
calibration), and the copy takes over once calibrated; the camera and inference never wait, and a stop waits
for it only briefly. Replay calibrates in place, so every frame is read with the reference it had live. Each
scan is then stored with its reference neurons; one the run ended before calibrating on is stored without
them.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from deepz.stages import window_traces
from storage.calibration import ScanRecord

log = logging.getLogger(__name__)

MAX_TRACE_COLUMNS = 600
"""Columns of the published dF/F window: frames are thinned to fill ``trace_window_s`` with at most this many
(30 s at 100 Hz is 3000 frames; every 5th is kept), which bounds the message size."""


class Reference(Protocol):
    """The readout's reference neurons: stable IDs and positions (z from the scan's focus, y, x) in um."""

    ids: np.ndarray
    positions_um: np.ndarray

    def found_mask(self) -> np.ndarray:
        """(N,) True for the neurons the scan found, False for ones kept by prediction (e.g. at the edge)."""
        ...


class ReadoutState(Protocol):
    """The readout of one frame: every reference neuron's position, brightness, dF/F and confidence (SNR)."""

    ids: np.ndarray
    positions_um: np.ndarray
    brightness: np.ndarray
    dff: np.ndarray
    confidence: np.ndarray


class LiveReadoutLike(Protocol):
    """What this stage needs of the readout library (track.readout)."""

    def calibrate(
        self, stack: np.ndarray, z_um: np.ndarray, pixel_size_um: float, optics: Any
    ) -> Reference: ...

    def recalibrate(self, stack: np.ndarray, z_um: np.ndarray, plane_period_s: float | None = None
                    ) -> Reference: ...

    def update(self, frame: np.ndarray, t_s: float) -> ReadoutState: ...

    def catch_up(self, current: Any) -> None: ...


def _finite_or_nan(values: np.ndarray) -> np.ndarray:
    """float32 values with infinities (e.g. dF/F over a zero baseline) as NaN: no value, as viewers expect."""
    values = np.asarray(values, np.float32)
    return np.where(np.isfinite(values), values, np.float32(np.nan))


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
class CalibrationJob:
    """A calibration to make: the scan (Z, H, W) at focus offsets ``z_um``; a first one with the pixel size
    and optics, a re-calibration with the time between the scan's planes (None: unknown)."""

    stack: np.ndarray
    z_um: np.ndarray
    first: bool
    pixel_size_um: float
    optics: Any
    plane_period_s: float | None = None

    def run(self, readout: LiveReadoutLike) -> Reference:
        """Calibrate ``readout`` in place; returns its reference."""
        if self.first:
            return readout.calibrate(self.stack, self.z_um, self.pixel_size_um, self.optics)
        return readout.recalibrate(self.stack, self.z_um, self.plane_period_s)


class Calibrator(Protocol):
    """Where live calibrations run beside the readout: ``hold`` copies the readout as it is (in the readout
    thread, which owns it), ``calibrate`` calibrates that copy (in a worker thread) and returns it with its
    reference; ``close`` at the run's end. ``where`` says where, for the run's summary."""

    @property
    def where(self) -> str: ...

    def hold(self, readout: LiveReadoutLike) -> Any: ...

    def calibrate(self, held: Any, job: CalibrationJob) -> tuple[LiveReadoutLike, Reference]: ...

    def close(self) -> None: ...


class ThreadCalibrator:
    """Calibrates in the worker thread itself, in the readout's process: simple, but the two share one
    interpreter, so a calibration slows the readout (a deepz.calibration_process.CalibrationProcess does
    not)."""

    where = "a thread beside the readout"

    def hold(self, readout: LiveReadoutLike) -> LiveReadoutLike:
        return copy.deepcopy(readout)

    def calibrate(self, held: LiveReadoutLike, job: CalibrationJob) -> tuple[LiveReadoutLike, Reference]:
        return held, job.run(held)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class PendingScan:
    """A scan to apply before frame ``record.frame_index``."""

    record: ScanRecord
    stack: np.ndarray


StoreScan = Callable[[ScanRecord, np.ndarray, np.ndarray, np.ndarray], None]


class ReadoutStage:
    """Calibrate from scans, read each frame, remember dF/F over the last ``trace_window_s`` seconds.

    ``store`` (optional) receives each scan with its reference (ids, positions); ``drift_um`` with
    ``request_scan``: ask for a new scan when the followed neurons moved (median) that far from the scan's;
    ``calibrator``: calibrate beside the readout with it (live; the stage closes it at ``finish``), None: in
    place, in the calling thread (replay).
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
        calibrator: Calibrator | None = None,
    ) -> None:
        self.readout = readout
        self.optics = optics
        self.window_s = trace_window_s
        self.store = store
        self.drift_um = drift_um
        self.request_scan = request_scan
        self.calibrator = calibrator
        self.store_error: str | None = None
        self.records: list[ScanRecord] = []
        self._pending: collections.deque[PendingScan] = collections.deque()
        self._history: collections.deque[tuple[float, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=MAX_TRACE_COLUMNS
        )
        self._lock = threading.Lock()
        self._calibrated = False
        self._calibrating: PendingScan | None = None  # the scan a worker calibrates on now
        self._ready: LiveReadoutLike | None = None  # a worker's freshly calibrated readout, to take over
        self._ready_catches_up = False  # it was re-calibrated while this stage's readout read on
        self._storing = False  # a worker is storing the scan it calibrated on
        self._calibration_done = threading.Event()  # set while no calibration is in progress
        self._calibration_done.set()
        self._failure: BaseException | None = None
        self._finished = False
        self._drift_requested = False
        self._anchor: tuple[np.ndarray, np.ndarray] = (np.zeros(0, np.int64), np.zeros((0, 3)))
        self._not_read = {"fell_behind": 0, "before_calibration": 0}  # frames without a readout, and why

    # ---------------------------------------------------------------- any thread
    def offer_scan(self, scan: PendingScan) -> None:
        """Queue a scan; it is applied before the first frame whose index reaches ``record.frame_index``."""
        with self._lock:
            self._pending.append(scan)

    def status(self) -> dict[str, Any]:
        """Calibration figures for status lines and viewers: scans taken, and the time (s since the epoch)
        and reference size of the last one the readout calibrated on."""
        with self._lock:
            records = list(self.records)
        used = [r for r in records if "reference" not in r.extra]  # the readout calibrated on these
        last = used[-1] if used else None
        return {
            "calibrations": len(records),
            "last_calibration_host_s": None if last is None else last.end_host_s,
            "reference_neurons": None if last is None else last.n_reference,
            "calibration_pause_s": round(sum(r.pause_s for r in records), 3),
            "calibration_frames_cost": sum(r.frames_cost for r in records),
        }

    def calibrating(self) -> bool:
        """True while a worker calibrates on a scan."""
        with self._lock:
            return self._calibrating is not None

    def first_calibration_running(self) -> bool:
        """True while the first scan is being calibrated on (no reference yet): a caller whose frames are
        buffered can wait and read them with it instead of skipping them."""
        with self._lock:
            return not self._calibrated and self._calibrating is not None

    def recent_traces(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """ids (M,), times (W,) s and dF/F (M, W) over the window, NaN where a neuron had no readout."""
        with self._lock:
            history = list(self._history)
        return window_traces(history)

    def summary(self) -> dict[str, Any]:
        """The run's calibration figures and every scan's record (for the run summary and the recording)."""
        with self._lock:
            records = [dataclasses.asdict(r) for r in self.records]
            not_read = dict(self._not_read)
        keys = ("index", "reason", "frame_index", "start_host_s", "end_host_s", "pause_s", "frames_cost",
                "n_reference", "focus_um")
        where = "place (replay)" if self.calibrator is None else self.calibrator.where
        return {**self.status(), "scans": [{k: r[k] for k in keys} for r in records],
                "store_error": self.store_error, "frames_not_read": not_read, "calibrated_in": where}

    def fell_behind(self, frames: int) -> None:
        """Count frames the caller dropped before this stage read them (it fell behind the camera)."""
        with self._lock:
            self._not_read["fell_behind"] += frames

    def finish(self, wait_s: float = 10.0) -> None:
        """After the last frame: wait up to ``wait_s`` for a calibration in progress, then store the scans no
        calibration finished for without a reference, so every scan is recorded and the run ends promptly."""
        with self._lock:
            in_progress = self._calibrating
        if in_progress is not None and not self._calibration_done.wait(wait_s):
            log.warning("the run ended while calibrating on scan %d; stored without its reference",
                        in_progress.record.index)
        with self._lock:
            self._finished = True
            storing = self._storing
            abandoned = [] if storing or self._calibrating is None else [self._calibrating]
            unused = abandoned + list(self._pending)
            self._pending.clear()
        if storing:  # a worker that finished calibrating is storing its scan: a moment
            self._calibration_done.wait()
        self._store_without_reference(unused, "the run ended before the readout calibrated on this scan")
        if self.calibrator is not None:
            self.calibrator.close()

    def _store_without_reference(self, scans: list[PendingScan], why: str) -> None:
        """Record and store scans no reference was computed for, saying why."""
        for scan in scans:
            note = {"reference": f"not computed: {why}"}
            record = dataclasses.replace(scan.record, n_reference=0, extra={**scan.record.extra, **note})
            self._store_scan(record, scan.stack, np.zeros(0, np.int64), np.zeros((0, 3)))

    # ---------------------------------------------------------------- the readout thread
    def update(self, t: int, time_s: float, frame: np.ndarray) -> ReadoutSnapshot | None:
        """Read frame ``t`` (in time order); None before the first calibration and while calibrating."""
        if self._failure is not None:
            raise self._failure
        self.apply_scans(t)
        if not self._calibrated:
            with self._lock:
                self._not_read["before_calibration"] += 1
            return None
        state = self.readout.update(frame, time_s)
        snap = ReadoutSnapshot(
            t=t,
            ids=np.asarray(state.ids, np.int64),
            positions_um=np.asarray(state.positions_um, np.float32).reshape(-1, 3),
            intensity=np.asarray(state.brightness, np.float32),
            dff=_finite_or_nan(state.dff),
            confidence=_finite_or_nan(state.confidence),
        )
        with self._lock:
            if not self._history or time_s - self._history[-1][0] >= self.window_s / MAX_TRACE_COLUMNS:
                self._history.append((time_s, snap.ids, snap.dff))
            while self._history and time_s - self._history[0][0] > self.window_s:
                self._history.popleft()
        self._check_drift(state)
        return snap

    def apply_scans(self, t: int) -> None:
        """Take over a readout a worker calibrated, then start calibrating on the newest scan due by frame
        ``t`` unless a calibration is in progress (older due scans, taken while one was, are stored without a
        reference: the newest describes the specimen now): with the calibrator in a worker thread, or here
        without one (seconds on a CPU: the pipeline calls this outside its compute lock). Readout thread
        only."""
        while True:
            with self._lock:
                if self._ready is not None:  # a worker calibrated a copy: it takes over from here
                    if self._ready_catches_up:  # from where this one followed the specimen meanwhile
                        self._ready.catch_up(self.readout)
                    self.readout, self._ready = self._ready, None
                due = [p for p in self._pending if p.record.frame_index <= t]
                if self._calibrating is not None or not due:
                    return
                for _ in due:
                    self._pending.popleft()
                scan = self._calibrating = due[-1]
                superseded = due[:-1]
                self._calibration_done.clear()
            if self.calibrator is not None:
                held = self.calibrator.hold(self.readout)  # this thread owns the readout: a consistent copy
                # not a daemon: torch must not be torn down under it at exit (the process aborts); a run that
                # ended during a calibration closes at once, and its process exits when the thread is done
                worker = threading.Thread(target=self._calibrate, args=(scan, held, superseded),
                                          name="calibrate")
                worker.start()
                return
            self._calibrate(scan, None, superseded)
            if self._failure is not None:
                raise self._failure

    def _calibrate(self, scan: PendingScan, held: Any, superseded: list[PendingScan]) -> None:
        """Calibrate (first scan) or re-calibrate on ``scan`` the readout the calibrator ``held`` (None: this
        stage's own, in place), store the scan with the reference found (and the ``superseded`` ones
        without), and hand the readout over to the readout thread."""
        record = scan.record
        try:
            self._store_without_reference(superseded, "a newer scan came before the readout calibrated on it")
            started = time.perf_counter()
            z = np.asarray(record.z_um, np.float64)
            period = (record.end_host_s - record.start_host_s) / max(len(z), 1)  # planes evenly in time
            first = not self._calibrated
            job = CalibrationJob(scan.stack, z, first, record.pixel_size_um, self.optics, period)
            if held is None or self.calibrator is None:
                readout, reference = self.readout, job.run(self.readout)
            else:
                readout, reference = self.calibrator.calibrate(held, job)
            ids = np.asarray(reference.ids, np.int64)
            positions = np.asarray(reference.positions_um, np.float64).reshape(-1, 3)
            found = reference.found_mask()  # the scan's table: its finds, not neurons kept by prediction
            kept = {k: v for k, v in record.extra.items() if k != "reference"}  # replay: "it had none" goes
            record = dataclasses.replace(record, n_reference=int(found.sum()), extra=kept)
            log.info("calibration %d (%s): %d reference neurons (+%d it missed, kept by prediction) in %.2f s",
                     record.index, record.reason, int(found.sum()), int((~found).sum()),
                     time.perf_counter() - started)
            self._anchor = (ids, positions)
            self._drift_requested = False
            with self._lock:
                if self._finished:  # the run ended meanwhile: finish() stored the scan already
                    return
                self._storing = True  # finish() now waits for this store instead of making its own
            self._store_scan(record, scan.stack, ids[found], positions[found])
            with self._lock:
                self._ready = None if readout is self.readout else readout
                self._ready_catches_up = self._calibrated  # a re-calibration: frames were read meanwhile
                self._calibrated = True
        except BaseException as exc:  # noqa: BLE001 - raised in the readout thread by its next update
            if not self._finished:  # else the run ended first (its calibrator closed under it): not raised
                self._failure = exc
        finally:
            with self._lock:
                self._calibrating, self._storing = None, False
            self._calibration_done.set()

    def _store_scan(
        self, record: ScanRecord, stack: np.ndarray, ids: np.ndarray, positions: np.ndarray
    ) -> None:
        """Keep the record and store the scan; a failed store (e.g. a full disk) is reported, not raised."""
        with self._lock:
            self.records.append(record)
        if self.store is None:
            return
        try:
            self.store(record, stack, ids, positions)
        except OSError as exc:
            self.store_error = self.store_error or f"calibration scan {record.index} not stored: {exc}"
            log.error("%s", self.store_error)

    def _check_drift(self, state: ReadoutState) -> None:
        """Ask for a re-scan once the neurons moved (median, 3D) more than ``drift_um`` from the reference."""
        if self.drift_um is None or self.request_scan is None or self._drift_requested:
            return
        ids, anchor = self._anchor
        # the scan's neurons still read (neurons entering the field join between scans)
        _, now, then = np.intersect1d(state.ids, ids, assume_unique=True, return_indices=True)
        if len(now) == 0:
            return
        moved = np.linalg.norm(np.asarray(state.positions_um, np.float64)[now] - anchor[then], axis=1)
        if float(np.median(moved)) > self.drift_um:
            self._drift_requested = True
            self.request_scan("drift")
