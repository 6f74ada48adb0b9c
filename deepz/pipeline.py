"""The running pipeline: camera -> raw store + inference -> volume store + tracking -> viewers.

The acquisition loop (the caller's thread) records every raw frame. Inference, tracking and the readout run
either in a compute process (deepz.compute_process: live, so that they never take the camera's time) fed
through a shared-memory ring, or in threads of this process handing over through one-item mailboxes. Live,
acquisition never waits for them: a frame inference did not take is marked skipped. In replay every hand-over
waits, so every frame becomes a volume. A compute process that fails or stalls ends without the camera: raw
recording goes on, and its error is logged, put in the summary and stored with it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from deepz.protocols import (
    FrameReadout,
    FrameSource,
    HandsOverDevice,
    Publisher,
    ReadSnapshot,
    Recorder,
    Snapshot,
    Traces,
    VolumeEngine,
    VolumeTracker,
)
from deepz.stages import Closed, LatencyRecorder, Mailbox, RateMeter
from wire.frames import FrameMeta

if TYPE_CHECKING:
    from deepz.compute_process import ComputeProcess, Result

log = logging.getLogger(__name__)

StatusCallback = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class PipelineStages:
    """What each frame goes through: an engine run in threads or a compute process (running the engine,
    tracker and readout in its own process; started), exactly one; and each optional stage here."""

    engine: VolumeEngine | None = None
    compute: ComputeProcess | None = None
    recorder: Recorder | None = None
    tracker: VolumeTracker | None = None
    readout: FrameReadout | None = None  # reads every reference neuron in each frame; replaces tracks
    publisher: Publisher | None = None


@dataclass(frozen=True)
class RunMode:
    """How the run paces itself. ``live``: hand-overs keep the newest item (what inference did not take is
    skipped), else every hand-over waits; ``live_source``: latency counts from the camera's host time (else
    from arrival); ``serialize_compute``: inference, tracking and readout take turns (one CPU thread pool)."""

    live: bool = True
    live_source: bool = True
    duration_s: float | None = None
    serialize_compute: bool = False


@dataclass(frozen=True)
class Reporting:
    """What status and published messages say beside the data: the publish rate cap, the run's geometry
    (``meta``), the recording's path and its writer's queue depth."""

    publish_max_hz: float = 20.0
    meta: dict[str, Any] = field(default_factory=dict)
    recording: str | None = None
    queue_depth: Callable[[], int] = lambda: 0


@dataclass
class PipelineStats:
    """Running figures of one run; `snapshot()` is what status lines, viewers and the summary show."""

    frames_in: RateMeter = field(default_factory=RateMeter)
    volumes_out: RateMeter = field(default_factory=RateMeter)
    tracked: RateMeter = field(default_factory=RateMeter)
    read_out: RateMeter = field(default_factory=RateMeter)
    frame_to_volume: LatencyRecorder = field(default_factory=LatencyRecorder)
    skipped: int = 0
    frames_not_stored: int = 0
    volumes_not_stored: int = 0
    started: float = field(default_factory=time.perf_counter)

    def snapshot(self, lost: int, queue_depth: int = 0, recording: str | None = None) -> dict[str, Any]:
        """``lost``: the frames the source lost (its own count, the one place they are added up)."""
        recent = self.frame_to_volume.percentiles(last=200)
        return {
            "elapsed_s": round(time.perf_counter() - self.started, 3),
            "frames": self.frames_in.count,
            "volumes": self.volumes_out.count,
            "input_hz": round(self.frames_in.rate(), 2),
            "volume_hz": round(self.volumes_out.rate(), 2),
            "latency_ms_p50": recent["p50"],
            "latency_ms_p99": recent["p99"],
            "lost": lost + self.frames_not_stored,
            "skipped": self.skipped,
            "queue_depth": queue_depth,
            "recording": recording,
        }


@dataclass(frozen=True)
class _Work:
    t: int
    image: np.ndarray
    meta: FrameMeta
    origin_s: float  # host time the frame-to-volume latency counts from


class Pipeline:
    """Wires one frame source to an engine (or a compute process) and, each optional, a recorder, a tracker, a
    readout and a publisher (``stages``), paced by ``mode``, its status and messages carrying ``reporting``."""

    def __init__(
        self, source: FrameSource, stages: PipelineStages, mode: RunMode = RunMode(),
        reporting: Reporting = Reporting(),
    ) -> None:
        if (stages.engine is None) == (stages.compute is None):
            raise ValueError("a pipeline runs either an engine (in threads) or a compute process")
        self.source = source
        self.engine, self.compute, self.recorder = stages.engine, stages.compute, stages.recorder
        self.tracker, self.readout, self.publisher = stages.tracker, stages.readout, stages.publisher
        self.live, self.live_source, self.duration_s = mode.live, mode.live_source, mode.duration_s
        self.publish_period = 1.0 / reporting.publish_max_hz
        self.meta = reporting.meta
        self.recording = reporting.recording
        self._queue_depth = reporting.queue_depth
        self.stats = PipelineStats()
        self._to_infer: Mailbox[_Work] = Mailbox(latest=mode.live)
        self._to_track: Mailbox[tuple[_Work, Any]] = Mailbox(latest=mode.live)  # a volume array or device tensor
        self._to_read: Mailbox[_Work] = Mailbox(latest=mode.live)
        self._stop = threading.Event()
        self._stop_reason = "stopped"
        self.recording_error: BaseException | None = None  # the recorder's failure that ended the run
        self._errors: list[BaseException] = []
        self._latest_frame: _Work | None = None
        self._latest_volume: tuple[int, np.ndarray] | None = None
        self._latest_tracks: Snapshot | None = None
        self._published_key: tuple[int, int | None, int] | None = None
        self._unstored_run = 0
        self._pending: collections.deque[_Work] = collections.deque()  # frames whose fate is not known yet
        self.compute_error: str | None = None  # why the compute process stopped early, if it did
        self.compute_done: dict[str, Any] | None = None
        self._latest_traces: Traces | None = None
        self._remote_status: dict[str, Any] = {}
        self._said_calibrating = False
        self._ring_ok = True  # False once the frame ring's lock was lost (its reader died holding it)
        self._input_ended: float | None = None  # when the ring was closed (monotonic s)
        # On a CPU, inference and tracking share one torch thread pool and two cores; taking turns keeps each
        # engine call's thread partitioning, and so its result, close to what replay computes.
        self._compute_lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if mode.serialize_compute else contextlib.nullcontext()
        )

    # --- public ---------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        """Current figures (thread-safe enough for a status line)."""
        status = self.stats.snapshot(self.source.stats.lost, self._queue_depth(), self.recording)
        if self.readout is not None:
            status.update(readout_hz=round(self.stats.read_out.rate(), 2), **self.readout.status())
        elif self._reads_out:
            status.update(readout_hz=round(self.stats.read_out.rate(), 2), **self._remote_status)
        return status

    @property
    def _reads_out(self) -> bool:
        """A readout stage (here or in the compute process) reads every reference neuron in each frame."""
        return self.readout is not None or (self.compute is not None and bool(self.compute.info.get("readout")))

    def stop(self, reason: str = "stopped") -> None:
        """Ask the run to end after the frame in hand; safe from any thread or a signal handler."""
        self._stop_reason = reason
        self._stop.set()

    def run(self, on_status: StatusCallback | None = None, status_period_s: float = 1.0) -> dict[str, Any]:
        """Acquire until the source ends, the duration passes or stop(); returns the run summary."""
        compute, engine, tracker, readout, publisher = (self.compute, self.engine, self.tracker, self.readout,
                                                        self.publisher)  # fmt: skip
        if compute is not None:
            workers = [self._worker(lambda: self._results_loop(compute), "deepz-results")]
        else:
            assert engine is not None  # __init__ checked that there is one of the two
            workers = [self._worker(lambda: self._infer_loop(engine), "deepz-infer")]
        if tracker is not None:
            workers.append(self._worker(lambda: self._track_loop(tracker), "deepz-track"))
        if readout is not None:
            workers.append(self._worker(lambda: self._readout_loop(readout), "deepz-readout"))
        if publisher is not None:
            workers.append(self._worker(lambda: self._publish_loop(publisher), "deepz-pub"))
        for w in workers:
            w.start()
        interrupted = False
        self._end_reason = "not started"
        acquire_start = time.perf_counter()
        try:
            self._acquire_loop(on_status, status_period_s)
        except KeyboardInterrupt:
            interrupted = True
        except Closed:
            pass  # a stage failed and closed the hand-over; its error is raised below
        finally:
            self._acquired_s = time.perf_counter() - acquire_start
            self.source.stop()
            self._to_infer.close()
            if self.compute is not None:
                self._input_ended = time.monotonic()
                self.compute.stop_input()
            workers[0].join()
            if self.compute is not None:
                self._record_pending(self.compute, final=True)
            self._to_track.close()
            self._to_read.close()
            self._stop.set()
            for w in workers[1:]:
                w.join()
        if self._errors:
            raise self._errors[0]
        if on_status is not None:
            on_status(self.status())
        return self._summary(interrupted)

    # --- threads --------------------------------------------------------------------------------
    def _worker(self, loop: Callable[[], None], name: str) -> threading.Thread:
        """A daemon thread running ``loop``; its failure ends the run and is raised by run()."""
        return threading.Thread(target=self._guard(loop), name=name, daemon=True)

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:  # surfaced by run() in the caller's thread
                log.exception("pipeline stage %s failed", threading.current_thread().name)
                self._errors.append(exc)
                self._stop.set()
                self._to_infer.close()
                self._to_track.close()
                self._to_read.close()

        return run

    def _acquire_loop(self, on_status: StatusCallback | None, status_period_s: float) -> None:
        start = time.perf_counter()
        self._next_status = start + status_period_s
        pending: _Work | None = None  # handed to inference; recorded once the next frame shows if it was taken
        self._end_reason = "source ended"
        try:
            for t, (image, meta) in enumerate(self.source.frames()):
                now = time.perf_counter()
                work = _Work(t, image, meta, meta.host_time_s if self.live_source else time.time())
                self.stats.frames_in.tick(now)  # counted once in hand: every counted frame is recorded
                self._latest_frame = work
                if self.compute is not None:
                    self._offer(self.compute, work)
                else:
                    displaced = self._to_infer.put(work)
                    if self.readout is not None and self._to_read.put(work) is not None:
                        self.readout.fell_behind(1)  # replaced by this one before it was read
                    done, pending = pending, work
                    if done is not None:
                        self._record(done, skipped=displaced is not None)
                    self.stats.skipped += int(displaced is not None)
                if self._should_end(now, start, on_status, status_period_s):
                    break
        finally:
            if pending is not None:
                self._record(pending, skipped=False)  # the inference thread drains it before stopping

    def _should_end(self, now: float, start: float, on_status: StatusCallback | None, status_period_s: float) -> bool:
        """Status line when due; True when the run is to end (stop(), duration, a failed thread here)."""
        if self._errors:
            self._end_reason = "error"
            return True
        if on_status is not None and now >= self._next_status:
            on_status(self.status())
            self._next_status = now + status_period_s
        for reason, ended in ((self._stop_reason, self._stop.is_set()),
                              ("duration reached", self.duration_s is not None and now - start >= self.duration_s)):
            if ended:
                self._end_reason = reason
                return True
        return False

    # --- the compute process --------------------------------------------------------------------
    def _offer(self, compute: ComputeProcess, work: _Work) -> None:
        """Hand a frame to the compute process's ring and record the frames whose fate is known."""
        from deepz.frame_ring import RingBroken

        if self._ring_ok:
            try:
                compute.offer(work.t, work.image, float(work.meta.camera_time_s), work.origin_s)
            except RingBroken as exc:
                self._ring_ok = False
                self._compute_failed(f"{exc}; raw recording goes on without volumes")
        self._pending.append(work)
        self._record_pending(compute, final=False)

    def _record_pending(self, compute: ComputeProcess, final: bool) -> None:
        """Record the oldest frames whose fate is known: taken by inference, or skipped (displaced in the
        ring, or older than the one it took); with ``final``, every frame left is skipped."""
        if final and self._ring_ok:
            compute.frames.settle()
        while self._pending:
            work = self._pending[0]
            taken = compute.frames.fate(work.t) if self._ring_ok else False
            if taken is None:
                if not final:
                    return
                taken = False
            self._pending.popleft()
            self.stats.skipped += int(not taken)
            self._record(work, skipped=not taken)

    def _compute_failed(self, message: str) -> None:
        if self.compute_error is None:
            self.compute_error = message
            log.error("compute process: %s", message)

    def _results_loop(self, compute: ComputeProcess) -> None:
        """Store and keep what the compute process sends until it is done, dies, or outlives its stop time."""
        quiet_since = time.monotonic()
        while True:
            result = compute.poll(0.2)
            if result is None and not compute.alive():
                result = compute.poll(0.5)  # what it sent just before exiting
            now = time.monotonic()
            if result is None:
                # after the last frame it may still be calibrating, then reading the frames it kept meanwhile:
                # a stall is a process that sends nothing (not even that it calibrates) for the stop wait
                ended = self._input_ended
                if ended is not None and now - max(ended, quiet_since) > self._stop_wait_s(compute):
                    self._compute_failed(f"stalled: nothing for {self._stop_wait_s(compute):.0f} s after the last "
                                         "frame; stopped it")  # fmt: skip
                    compute.kill()
                    return
                if not compute.alive():
                    self._compute_failed(f"exited (code {compute.process.exitcode}) before the run ended")
                    return
                if now - quiet_since > compute.stop_timeout_s and self._input_ended is None:
                    log.warning("compute process: nothing for %.0f s (frames are recorded, volumes skipped)",
                                now - quiet_since)
                    quiet_since = now
                continue
            quiet_since = now
            if result.kind == "done":
                self.compute_done = result.payload
                return
            self._on_result(compute, result)

    def _stop_wait_s(self, compute: ComputeProcess) -> float:
        """How long the compute process may take to finish after the last frame: its stop timeout, or three
        times the slowest frame-to-volume latency so far (a slow CPU is not a stall)."""
        slowest_ms = self.stats.frame_to_volume.percentiles()["max"] or 0.0
        return max(compute.stop_timeout_s, 3e-3 * slowest_ms)

    def _on_result(self, compute: ComputeProcess, result: Result) -> None:
        kind, seq, payload = result
        recorder = self.recorder
        if kind == "volume":
            self.stats.frame_to_volume.add(time.time() - payload)
            self.stats.volumes_out.tick()
            assert compute.volumes is not None  # made by compute.start()
            taken = compute.volumes.take(seq)
            if taken is None:  # overwritten in the ring before this thread could copy it
                self._volume_not_stored()
                return
            if recorder is not None:
                self._store(lambda: recorder.write_volume(seq, taken.array), self._volume_not_stored)
            self._latest_volume = (seq, taken.array)
        elif kind in ("tracks", "readout"):
            snap, traces = payload
            (self.stats.tracked if kind == "tracks" else self.stats.read_out).tick()
            if recorder is not None:
                self._store(
                    lambda: recorder.write_tracks(seq, snap.ids, snap.positions_um, snap.intensity, snap.dff),
                    lambda: None,
                )
            if traces is not None:
                self._latest_traces = traces
            self._latest_tracks = snap
        elif kind == "status":
            self._remote_status = payload
        elif kind == "calibrating" and not self._said_calibrating:  # after the last frame: work, not a stall
            self._said_calibrating = True
            log.info("compute process: finishing its calibration; the readout then reads the frames it kept")
        elif kind == "request_scan" and compute.request_scan is not None:
            compute.request_scan(payload)
        elif kind == "error":
            log.error("compute process: %s stage failed:\n%s", payload["stage"], payload["traceback"])
            exc = payload["exception"]
            self._compute_failed(f"{payload['stage']} failed: {type(exc).__name__}: {exc}")

    def _record(self, work: _Work, skipped: bool) -> None:
        """Store one raw frame; a frame the writer cannot take is counted as not stored, never dropped silently."""
        recorder = self.recorder
        if recorder is None:
            return
        record = dataclasses.replace(work.meta, lost_before=work.meta.lost_before + self._unstored_run,
                                     volume_skipped=skipped)  # frames the writer could not take count as lost
        if self._store(lambda: recorder.write_frame(work.image, record), self._frame_not_stored):
            self._unstored_run = 0

    def _frame_not_stored(self) -> None:
        self._unstored_run += 1
        self.stats.frames_not_stored += 1

    def _volume_not_stored(self) -> None:
        self.stats.volumes_not_stored += 1

    def _store(self, write: Callable[[], None], not_stored: Callable[[], None]) -> bool:
        """One write to the recorder. A full queue counts the item as not stored; a failed recorder (disk
        full, store removed) also ends the run, which then closes with its summary instead of a traceback."""
        from storage import WriterBehindError, WriterError

        try:
            write()
        except WriterBehindError as exc:
            not_stored()
            log.warning("%s", exc)
            return False
        except WriterError as exc:
            not_stored()
            if self.recording_error is None:
                self.recording_error = exc
                log.error("%s", exc)
                self.stop("recording failed")
            return False
        return True

    def _infer_loop(self, engine: VolumeEngine) -> None:
        recorder = self.recorder
        while True:
            try:
                work = self._to_infer.take()
            except Closed:
                return
            for_tracker: Any  # a host array, or the engine's device tensor
            with self._compute_lock:
                if self.tracker is not None and isinstance(engine, HandsOverDevice):
                    volumes, on_device = engine.run_with_device(work.image[np.newaxis])
                    volume, for_tracker = volumes[0], on_device[0]  # tracked where the engine ran
                else:
                    volume = for_tracker = engine.run(work.image[np.newaxis])[0]
            self.stats.frame_to_volume.add(time.time() - work.origin_s)
            self.stats.volumes_out.tick()
            if recorder is not None:
                self._store(lambda: recorder.write_volume(work.t, volume), self._volume_not_stored)
            self._latest_volume = (work.t, volume)
            if self.tracker is not None:
                displaced = self._to_track.put((work, for_tracker))
                if displaced is not None:
                    log.debug("tracking skipped volume %d", displaced[0].t)

    def _track_loop(self, tracker: VolumeTracker) -> None:
        recorder = self.recorder
        while True:
            try:
                work, volume = self._to_track.take()
            except Closed:
                return
            with self._compute_lock:
                snap = tracker.update(work.t, float(work.meta.camera_time_s), volume)
            self.stats.tracked.tick()
            if recorder is not None:
                self._store(
                    lambda: recorder.write_tracks(work.t, snap.ids, snap.positions_um, snap.intensity, snap.dff),
                    lambda: None,
                )
            self._latest_tracks = snap

    def _readout_loop(self, readout: FrameReadout) -> None:
        recorder = self.recorder
        while True:
            try:
                work = self._to_read.take()
            except Closed:
                return
            readout.apply_scans(work.t)  # seconds of detection and fitting: inference goes on meanwhile
            with self._compute_lock:
                snap = readout.update(work.t, float(work.meta.camera_time_s), work.image)
            if snap is None:  # not calibrated yet
                continue
            self.stats.read_out.tick()
            if recorder is not None:
                self._store(
                    lambda: recorder.write_tracks(work.t, snap.ids, snap.positions_um, snap.intensity, snap.dff),
                    lambda: None,
                )
            self._latest_tracks = snap

    def _publish_loop(self, publisher: Publisher) -> None:
        while not self._stop.wait(self.publish_period):
            self._publish_latest(publisher)
        self._publish_latest(publisher)

    def _publish_latest(self, publisher: Publisher) -> None:
        frame, volume, snap = self._latest_frame, self._latest_volume, self._latest_tracks
        if frame is None:
            return
        key = (frame.t, volume[0] if volume else None, id(snap))
        if key == self._published_key:
            return
        self._published_key = key
        arrays: dict[str, np.ndarray] = {"frame": frame.image}
        meta = dict(self.meta, frame_t=frame.t, frame_host_time_s=frame.origin_s)
        if volume is not None:
            arrays["volume"] = volume[1]
            meta["volume_t"] = volume[0]
        if snap is not None:
            arrays["track_ids"] = np.asarray(snap.ids, np.int64)
            arrays["track_positions_um"] = np.asarray(snap.positions_um, np.float32).reshape(-1, 3)
            traces = self._latest_traces if self.compute is not None else self._traces()
            if traces is not None:
                ids, times, dff = traces
                arrays.update(trace_ids=ids, trace_t=times, traces_dff=dff)
            if self._reads_out:
                arrays.update(track_dff=np.asarray(snap.dff, np.float32),
                              track_confidence=np.asarray(cast(ReadSnapshot, snap).confidence, np.float32))
        publisher.publish(frame.t, arrays, self.status(), meta)

    def _traces(self) -> Traces:
        """The recent dF/F of the stage here whose snapshots are published: the readout's, else the tracker's."""
        stage = self.readout or self.tracker
        assert stage is not None  # a snapshot came from one of them
        return stage.recent_traces()

    # --- summary --------------------------------------------------------------------------------
    def _summary(self, interrupted: bool) -> dict[str, Any]:
        elapsed, acquired = time.perf_counter() - self.stats.started, self._acquired_s
        latency = self.stats.frame_to_volume.percentiles()
        frames, volumes = self.stats.frames_in.count, self.stats.volumes_out.count
        return {
            "mode": "live" if self.live else "replay",
            "stopped_by": "interrupted (Ctrl-C)" if interrupted else self._end_reason,
            "elapsed_s": round(elapsed, 3),
            "acquisition_s": round(acquired, 3),
            "frames": frames,
            "frames_lost": self.source.stats.lost,
            "frames_not_stored": self.stats.frames_not_stored,
            "volumes": volumes,
            "volumes_not_stored": self.stats.volumes_not_stored,
            "volumes_skipped": self.stats.skipped,
            "tracked_volumes": self.stats.tracked.count,
            "read_out_frames": self.stats.read_out.count,
            "input_hz_mean": round(frames / acquired, 3) if acquired > 0 else None,
            "volume_hz_mean": round(volumes / acquired, 3) if acquired > 0 else None,
            "frame_to_volume_ms": latency,
            "engine": self.compute.info.get("engine") if self.compute is not None else getattr(self.engine, "name", None),
            "compute": "process" if self.compute is not None else "thread",
            "frames_displaced_in_ring": self.compute.frames.displaced if self.compute is not None else 0,
            "compute_error": self.compute_error,
            "recording_error": None if self.recording_error is None else str(self.recording_error),
        }
