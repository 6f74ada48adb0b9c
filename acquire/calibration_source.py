"""A camera source that pauses its stream for calibration focal scans: one before the first frame, then more
at an interval or on request (e.g. when the readout sees the specimen drift).

The camera cannot stream and step through z at once, so a scan stops the sequence acquisition, takes the
focal stack relative to the current focus (acquire.zstack, which restores the focus), and restarts the
stream. The frames the camera did not take meanwhile are not lost frames (nothing was overwritten): each
pause is kept as a ``ScanPause`` (when, how long, how many frames it cost at the nominal rate) and handed
with the scan to ``on_scan``. Frame indices continue across pauses.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

import numpy as np

from acquire.frames import SourceStats
from wire.frames import FrameMeta
from acquire.mm import MicroManagerSource
from acquire.zstack import FocalScan, acquire_focal_stack

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanPause:
    """One calibration scan's place in the stream.

    ``frame_index``: frames delivered before it (so the index of the next frame); ``frames_cost``: frames
    the camera would have taken at ``rate_hz`` while its stream was stopped (0 for the scan before the start).
    """

    index: int
    reason: str
    frame_index: int
    start_host_s: float
    end_host_s: float
    frames_cost: int

    @property
    def duration_s(self) -> float:
        return self.end_host_s - self.start_host_s


@dataclass(frozen=True)
class CalibrationScan:
    """A focal scan taken by the source, where it happened in the stream, and the pixel size of its frames."""

    scan: FocalScan
    pause: ScanPause
    pixel_size_um: float


class CalibratingSource:
    """Wraps a MicroManagerSource: scans before streaming, then every ``interval_s`` or on ``request_scan``.

    ``on_scan`` runs in the acquisition thread while the stream is stopped, so it should only hand the scan
    on (to storage and the readout), not process it.
    """

    def __init__(
        self,
        source: MicroManagerSource,
        offsets_um: np.ndarray,
        *,
        on_scan: Callable[[CalibrationScan], None],
        interval_s: float | None = None,
        settle_ms: float = 0.0,
    ) -> None:
        self.source = source
        self.offsets_um = np.asarray(offsets_um, np.float64)
        self.on_scan = on_scan
        self.interval_s = interval_s
        self.settle_ms = settle_ms
        self.pauses: list[ScanPause] = []
        self._requested: str | None = None
        self._lock = threading.Lock()
        self._delivered = 0
        self._last_scan_end = 0.0
        self._earlier = SourceStats()  # the streams' totals before the current one (each restart zeroes the camera's)
        self._paused = False

    # ---------------------------------------------------------------- FrameSource
    @property
    def frame_shape(self) -> tuple[int, int]:
        return self.source.frame_shape

    @property
    def pixel_size_um(self) -> float:
        return self.source.pixel_size_um

    @property
    def stats(self) -> SourceStats:
        """Frames delivered, frames lost and overflow events over every stream since the start (the frames a
        scan cost are not lost: see ``pauses``); the delivered rate of the current stream."""
        with self._lock:
            if self._paused:
                return self._earlier
            now, before = self.source.stats, self._earlier
            return SourceStats(before.acquired + now.acquired, before.lost + now.lost,
                               before.overflows + now.overflows, now.rate_hz)  # fmt: skip

    def start(self) -> None:
        """Take the initial calibration scan, then start the camera stream."""
        self._pause_for_scan("start")

    def frames(self) -> Iterator[tuple[np.ndarray, FrameMeta]]:
        """The camera's frames, indexed continuously across the pauses for scans taken in between."""
        if not self.pauses:
            self.start()
        while True:
            stream = self.source.frames()
            reason = None
            for image, meta in stream:
                yield image, dataclasses.replace(meta, index=self._delivered)
                self._delivered += 1
                reason = self._due()
                if reason is not None:
                    break
            stream.close()
            if reason is None:
                return  # the stream ended (stop() or a camera failure, which frames() re-raised)
            self._pause_for_scan(reason)

    def stop(self) -> None:
        self.source.stop()

    def __enter__(self) -> CalibratingSource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- scans
    def request_scan(self, reason: str) -> None:
        """Ask for a scan after the next frame (thread-safe; e.g. the readout saw too much drift)."""
        with self._lock:
            self._requested = self._requested or reason

    def _due(self) -> str | None:
        with self._lock:
            reason, self._requested = self._requested, None
        if reason is None and self.interval_s is not None:
            if time.time() - self._last_scan_end >= self.interval_s:
                reason = "interval"
        return reason

    def _pause_for_scan(self, reason: str) -> None:
        """Stop the stream (unless not yet started), scan, restart it; then hand the scan to ``on_scan``."""
        streaming = reason != "start"
        start = time.time()
        if streaming:
            self.source.stop()
            totals = self.stats
            with self._lock:  # the camera's counters restart with its stream: keep what they held
                self._earlier, self._paused = totals, True
        scan = acquire_focal_stack(self.source.core, self.offsets_um, settle_ms=self.settle_ms)
        self.source.start()
        with self._lock:
            self._paused = False
        end = time.time()
        pause = ScanPause(
            index=len(self.pauses),
            reason=reason,
            frame_index=self._delivered,
            start_host_s=start,
            end_host_s=end,
            frames_cost=int(round((end - start) * (self.source.rate_hz or 0.0))) if streaming else 0,
        )
        self.pauses.append(pause)
        self._last_scan_end = end
        log.info("calibration scan %d (%s): %d planes, stream stopped %.2f s%s", pause.index, reason,
                 len(self.offsets_um), pause.duration_s,
                 f", {pause.frames_cost} frames not taken" if streaming else "")
        self.on_scan(CalibrationScan(scan, pause, self.source.pixel_size_um))
