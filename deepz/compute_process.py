"""Inference, tracking and the activity readout in their own process, so nothing they do can take the camera
loop's or the raw writer's time.

Frames go in through a shared-memory ring (deepz.frame_ring) that never makes the camera wait; volumes come
back through a second ring, and everything small (which frame became a volume, track and readout snapshots,
trace windows, status, errors) through a queue, each tagged with its frame's sequence number. The process
builds its stages itself (``build``: a picklable function of a ComputeSpec; default build_stages) and reports
a stage's failure instead of taking the run down: the acquiring side keeps recording raw frames.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import multiprocessing as mp
import multiprocessing.util as mp_util
import os
import queue
import shutil
import signal
import threading
import time
import traceback
from collections.abc import Callable
from functools import partial
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from deepz.frame_ring import Closed as RingClosed
from deepz.frame_ring import FrameRing, RingSpec, Taken
from deepz.logs import configure_logging
from deepz.process_errors import portable
from deepz.protocols import HandsOverDevice
from deepz.stages import Closed, Mailbox

if TYPE_CHECKING:
    from deepz.protocols import VolumeEngine, VolumeTracker
    from deepz.readout_stage import ReadoutStage

log = logging.getLogger(__name__)

FRAME_SLOTS, VOLUME_SLOTS = 8, 3
"""Ring sizes: at least 8 frames (80 ms at 100 Hz; inference takes the newest, the readout every frame in
order); 3 volumes in flight back
(the fewest for one reader: 512x512 x 32 planes fit a container's default 64 MB of /dev/shm)."""
FRAME_RING_S = 2.0
"""Seconds of frames the ring holds where /dev/shm has room: a readout that falls behind for a while (a
re-calibration computed beside it, about a second on an H200) catches up without losing frames."""
INFER_READER, READOUT_READER = 0, 1
READOUT_FIRST_MAX_WAIT_S = 0.1
"""On a GPU, inference waits up to this long for the readout to catch up before each volume: the readout of
every frame is the run's measurement, a volume the display's (in one process they share the interpreter, and
an H200 read 985 of 1,638 frames while volumes were made as often as possible)."""


class ComputeError(RuntimeError):
    """The compute process failed, stalled or could not start; raw recording went on without it."""


@dataclass(frozen=True)
class ComputeSpec:
    """Everything the compute process builds its stages from (picklable)."""

    config: Any  # deepz.config.RunConfig
    frame_shape: tuple[int, int]
    pixel_size_um: float
    camera: Any  # deepz.optics_check.CameraOptics
    voxel_um: tuple[float, float, float]
    planes_um: tuple[float, ...]
    frame_interval_s: float  # the camera's (live) or the recording's (replay): the readout's time base
    replay_from: Path | None = None  # a realtime replay: the readout calibrates on the recording's scans
    publish_period_s: float = 0.05
    log_level: int = logging.INFO


class Stages(NamedTuple):
    """A compute process's stages: the engine, and each optional, the volume tracker and the frame readout."""

    engine: VolumeEngine
    tracker: VolumeTracker | None = None
    readout: ReadoutStage | None = None


def build_stages(spec: ComputeSpec) -> Stages:
    """The run's engine, tracker (on the tracking device) and readout stage, built from its config."""
    from deepz import wiring
    from deepz.calibration import build_readout_stage

    cfg = spec.config
    engine, model, _ = wiring.build_engine(cfg.inference, spec.frame_shape, spec.pixel_size_um, spec.camera)
    readout = build_readout_stage(
        cfg, model.manifest, replay_from=spec.replay_from, device=str(engine.device),
        frame_interval_s=spec.frame_interval_s,
    )  # fmt: skip
    tracker = None
    if readout is None:
        tracker = wiring.build_tracker(cfg.tracking, spec.voxel_um, np.asarray(spec.planes_um),
                                       engine_device=str(engine.device))
    return Stages(engine, tracker, readout)


class Result(NamedTuple):
    """One message from the compute process: its kind and what it carries (see _Worker)."""

    kind: str
    seq: int
    payload: Any


def frame_slots(spec: ComputeSpec, shm: str = "/dev/shm") -> int:
    """Frames in the ring: FRAME_RING_S of the camera's rate, as far as ``shm`` holds them beside the volume
    ring (float32 volumes at most), and never fewer than FRAME_SLOTS."""
    frame_bytes = int(np.prod(spec.frame_shape)) * 2
    wanted = math.ceil(float(spec.config.source.rate_hz) * FRAME_RING_S)
    if os.path.isdir(shm):
        volumes = VOLUME_SLOTS * len(spec.planes_um) * frame_bytes * 2
        room = int(0.8 * shutil.disk_usage(shm).free - volumes) // frame_bytes
        wanted = min(wanted, room)
    return max(FRAME_SLOTS, wanted)


# seconds the acquiring side waits for the process to finish after the last frame before it counts a stall
STOP_TIMEOUT_S = 10.0


class ComputeProcess:
    """The acquiring side's handle: start the process, offer frames, read results, stop."""

    def __init__(self, spec: ComputeSpec, *, build: Callable[[ComputeSpec], Stages] = build_stages, start_timeout_s: float = 1800.0,
                 stop_timeout_s: float = STOP_TIMEOUT_S) -> None:
        self.spec, self.build = spec, build
        self.start_timeout_s, self.stop_timeout_s = start_timeout_s, stop_timeout_s
        self._ctx = mp.get_context("spawn")
        # a frame's floats: camera time, origin time, and the scans sent before it (read only after those)
        self.frames = FrameRing.create(spec.frame_shape, np.uint16, slots=frame_slots(spec), readers=2,
                                       meta=3, lock=self._ctx.Lock())
        self._scans_sent = 0
        self.volumes: FrameRing | None = None
        self._volume_lock = self._ctx.Lock()  # a lock reaches a process only at its start, not through a queue
        self.results: Any = self._ctx.Queue()
        self.control: Any = self._ctx.Queue()
        self.info: dict[str, Any] = {}
        self.process: Any = None
        self.request_scan: Callable[[str], None] | None = None  # the calibrating source's, when the readout asks

    def offer_scan(self, scan: Any) -> None:
        """A calibration scan for the readout in the process (deepz.readout_stage.PendingScan)."""
        self.send("scan", scan)
        self._scans_sent += 1

    def start(self) -> dict[str, Any]:
        """Spawn the process and wait until its stages are built; raises what building them raised."""
        self.process = self._ctx.Process(target=_main, name="deepz-compute", daemon=True,
                                         args=(self.spec, self.frames.spec, self._volume_lock, self.build, self.results,
                                               self.control))
        self.process.start()
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            try:
                msg: Result = self.results.get(timeout=0.5)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise ComputeError(f"the compute process exited with code {self.process.exitcode} while "
                                       "building its stages") from None
                if time.monotonic() > deadline:
                    self.kill()
                    raise ComputeError(f"the compute process built no stages in {self.start_timeout_s:.0f} s") \
                        from None
        if msg.kind == "error":
            self.process.join(5)
            raise msg.payload["exception"]
        self.info = msg.payload
        self.volumes = FrameRing.create(tuple(self.info["volume_shape"]), self.info["volume_dtype"],
                                        slots=VOLUME_SLOTS, readers=1, meta=1, lock=self._volume_lock)
        self.control.put(("start", dataclasses.replace(self.volumes.spec, lock=None)))
        return self.info

    def offer(self, seq: int, image: np.ndarray, time_s: float, origin_s: float) -> int | None:
        """Put a frame in the ring (never waits); returns the seq it displaced untaken, if any."""
        return self.frames.put(seq, image, (time_s, origin_s, self._scans_sent))

    def send(self, kind: str, payload: Any) -> None:
        """A control message to the process (e.g. a calibration scan)."""
        self.control.put((kind, payload))

    def poll(self, timeout_s: float) -> Result | None:
        """The next result, or None after ``timeout_s``."""
        try:
            result: Result = self.results.get(timeout=timeout_s)
        except (queue.Empty, EOFError, OSError):
            return None
        return result

    def alive(self) -> bool:
        return self.process is not None and self.process.is_alive()

    def stop_input(self) -> None:
        """No more frames: the process finishes what it holds, reports ``done`` and exits."""
        self.frames.close()
        with contextlib.suppress(ValueError, OSError):
            self.control.put(("stop", None))

    def kill(self) -> None:
        """End a process that did not stop in time (its ring lock, if held, is never taken again)."""
        if self.process is not None and self.process.is_alive():
            self.process.kill()
            self.process.join(5)

    def close(self) -> None:
        """Join or kill the process and remove the shared memory (also after a start that failed)."""
        if self.process is not None and self.process.pid is not None:
            self.process.join(1)
            self.kill()
        for q in (self.results, self.control):
            q.close()
            q.cancel_join_thread()
        self.frames.detach()
        if self.volumes is not None:
            self.volumes.detach()


# ------------------------------------------------------------------------------------------- the process side
def _main(spec: ComputeSpec, frames_spec: RingSpec, volume_lock: Any, build: Callable[[ComputeSpec], Stages],
          results: Any, control: Any) -> None:
    """The compute process: build the stages, report ready, run until the frame ring closes.

    Ctrl-C (SIGINT to the whole process group) and SIGTERM are the acquiring process's to handle: it stops
    this one by closing the ring, and this one exits by itself when that process is gone.
    """
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    configure_logging(spec.log_level, origin="compute process")
    try:
        stages = build(spec)
        engine = stages.engine
        if engine.device.type == "cpu":  # the camera and writer share the CPU: they go first
            os.nice(10)
        probe = engine.run(np.zeros((1, *spec.frame_shape), np.uint16))[0]  # warms up, and gives the shape
    except BaseException as exc:
        results.put(Result("error", -1, {"stage": "startup", "exception": portable(exc, ComputeError),
                                         "traceback": traceback.format_exc()}))
        return
    results.put(Result("ready", -1, {"engine": engine.name, "device": str(engine.device),
                                     "volume_shape": list(probe.shape), "volume_dtype": probe.dtype.str,
                                     "tracking": stages.tracker is not None, "readout": stages.readout is not None}))
    while True:
        try:
            kind, volume_spec = control.get(timeout=0.5)
            break
        except queue.Empty:
            _exit_if_orphaned()
    if kind != "start":
        return
    volumes = FrameRing(dataclasses.replace(volume_spec, lock=volume_lock))
    worker = _Worker(spec, stages, FrameRing(frames_spec), volumes, results)
    worker.run(control)
    results.close()
    results.join_thread()  # everything reported; skip the interpreter's (torch's) slow teardown
    _exit_now()


def _exit_now() -> None:
    """Leave without the interpreter's (torch's) slow teardown, but unlink the named semaphores this process
    made (numcodecs' blosc mutex), which the shared resource tracker would otherwise report as leaked."""
    mp_util._run_finalizers(0)  # type: ignore[attr-defined]  # private, but what os._exit skips
    os._exit(0)


def _exit_if_orphaned() -> None:
    """Exit at once when the acquiring process is gone (its SIGKILL sends this one nothing)."""
    parent = mp.parent_process()
    if parent is not None and not parent.is_alive():
        _exit_now()


def _join(thread: threading.Thread, beat: Callable[[], None]) -> None:
    """Wait for a stage's thread, calling ``beat`` every half second, but exit at once if the acquiring process
    is gone (a stalled stage would otherwise keep this process, and its device memory, forever)."""
    while thread.is_alive():
        thread.join(0.5)
        _exit_if_orphaned()
        beat()


class _Worker:
    """Threads of the compute process: infer (newest frame -> volume), track (newest volume), readout
    (every frame while it keeps up); they take turns on a CPU, where they share one thread pool."""

    def __init__(self, spec: ComputeSpec, stages: Stages, frames: FrameRing, volumes: FrameRing, results: Any
                 ) -> None:
        self.spec, self.stages, self.frames, self.volumes, self.results = spec, stages, frames, volumes, results
        self._to_track: Mailbox[tuple[int, float, Any]] = Mailbox(latest=True)  # volume: array or tensor
        self._stop = threading.Event()
        self._scans_received = 0  # scans the listener handed to the readout, under _scan_arrived
        self._listening = True  # the listener may still hand over scans
        self._scan_arrived = threading.Condition()
        cpu = stages.engine.device.type == "cpu"
        self._turns = threading.Lock() if cpu else contextlib.nullcontext()
        self._traces_sent = 0.0
        self._failed = False

    def run(self, control: Any) -> None:
        readout = self.stages.readout
        if readout is not None:
            readout.request_scan = lambda reason: self.results.put(Result("request_scan", -1, reason))
        tracker = self.stages.tracker
        threads = [threading.Thread(target=self._guard("inference", self._infer), daemon=True)]
        if tracker is not None:
            threads.append(threading.Thread(target=self._guard("tracking", partial(self._track, tracker)),
                                            daemon=True))
        if readout is not None:
            threads.append(threading.Thread(target=self._guard("readout", partial(self._read, readout)),
                                            daemon=True))
        for thread in threads:
            thread.start()
        self._listen(control, readout)
        _join(threads[0], self._calibration_beat)
        self._to_track.close()
        for thread in threads[1:]:
            _join(thread, self._calibration_beat)
        summary = None
        if readout is not None and not self._failed:
            # a re-calibration in progress is waited for a while (the acquiring side hears that it runs)
            finishing = threading.Thread(target=readout.finish, args=(STOP_TIMEOUT_S / 2,), name="finish")
            finishing.start()
            _join(finishing, self._calibration_beat)
            summary = readout.summary()
        self.results.put(Result("done", -1, {"readout_summary": summary}))

    def _calibration_beat(self) -> None:
        """After the last frame, tell the acquiring side that a calibration is still running: the readout reads
        the frames it kept once that ends (seconds on a CPU), so the quiet is work, not a stall."""
        readout = self.stages.readout
        if readout is not None and readout.calibrating():
            self.results.put(Result("calibrating", -1, None))

    def _listen(self, control: Any, readout: Any) -> None:
        """Control messages until stop (scans for the readout), status every half second; ends when the
        acquiring process is gone."""
        next_status = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    kind, payload = control.get(timeout=0.1)
                except queue.Empty:
                    kind, payload = None, None
                if kind == "stop":
                    return
                if kind == "scan" and readout is not None:
                    readout.offer_scan(payload)
                    with self._scan_arrived:
                        self._scans_received += 1
                        self._scan_arrived.notify_all()
                _exit_if_orphaned()  # nobody left to deliver to
                if readout is not None and time.monotonic() >= next_status:
                    self.results.put(Result("status", -1, readout.status()))
                    next_status = time.monotonic() + 0.5
        finally:
            with self._scan_arrived:  # no scan comes after this: the readout waits for none
                self._listening = False
                self._scan_arrived.notify_all()

    def _guard(self, stage: str, loop: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                loop()
            except BaseException as exc:
                self._failed = True
                failure = portable(exc, ComputeError)
                self.results.put(Result("error", -1, {"stage": stage, "exception": failure,
                                                      "traceback": traceback.format_exc()}))
                self._stop.set()
                self.frames.close(lock_timeout_s=0.1)
                self._to_track.close()

        return run

    def _next_frame(self, reader: int, in_order: bool = False) -> Taken | None:
        """The newest frame for ``reader`` (or, ``in_order``, the next one); None once the run ended."""
        take = self.frames.take_next if in_order else self.frames.take_newest
        while not self._stop.is_set():
            try:
                return take(reader, timeout_s=0.2)
            except TimeoutError:
                continue
            except RingClosed:
                return None
        return None

    def _readout_first(self) -> None:
        """Wait (bounded) while the readout is more than a frame behind, on a GPU with a readout."""
        if self.stages.readout is None or self.stages.engine.device.type == "cpu":
            return  # on a CPU the stages take turns under one lock; the readout cannot keep up there anyway
        deadline = time.monotonic() + READOUT_FIRST_MAX_WAIT_S
        while self.frames.backlog(READOUT_READER) > 1 and time.monotonic() < deadline:
            if self._stop.wait(0.001):
                return

    def _infer(self) -> None:
        engine = self.stages.engine
        hands_over = engine if isinstance(engine, HandsOverDevice) else None  # the tracker gets its device copy
        while True:
            self._readout_first()
            if (item := self._next_frame(INFER_READER)) is None:
                return
            with self._turns:
                if hands_over is not None:
                    volumes, on_device = hands_over.run_with_device(item.array[np.newaxis])
                    volume, for_tracker = volumes[0], on_device[0]
                else:
                    volume = for_tracker = engine.run(item.array[np.newaxis])[0]
            # the acquiring side copies volumes out as they come; one it did not take within a second (a
            # loaded machine) is displaced, and counted there as not stored
            self.volumes.put(item.seq, volume, wait_s=1.0)
            self.results.put(Result("volume", item.seq, float(item.meta[1])))
            if self.stages.tracker is not None:
                self._to_track.put((item.seq, float(item.meta[0]), for_tracker))

    def _track(self, tracker: VolumeTracker) -> None:
        while True:
            try:
                seq, time_s, volume = self._to_track.take()
            except Closed:
                return
            with self._turns:
                snap = tracker.update(seq, time_s, volume)
            self._send_snapshot("tracks", seq, snap, tracker)

    def _read(self, readout: ReadoutStage) -> None:
        last = -1
        slack = int(0.8 * self.frames.spec.slots)  # frames the ring keeps for a readout that waits
        while (item := self._next_frame(READOUT_READER, in_order=True)) is not None:
            readout.fell_behind(item.seq - last - 1)  # overwritten in the ring before being read
            last = item.seq
            if not self._scans_before(int(item.meta[2])):
                return
            readout.apply_scans(item.seq)
            while readout.first_calibration_running() and self.frames.backlog(READOUT_READER) < slack:
                if self._stop.wait(0.01):
                    return
            with self._turns:
                snap = readout.update(item.seq, float(item.meta[0]), item.array)
            if snap is not None:
                self._send_snapshot("readout", item.seq, snap, readout)

    def _scans_before(self, sent: int) -> bool:
        """Wait until the ``sent`` scans offered before a frame reached the readout: they come through the
        control queue, which can lag the frame ring; False once the run stopped."""
        with self._scan_arrived:  # the listener notifies each scan, and its end (which a stop brings)
            self._scan_arrived.wait_for(lambda: self._scans_received >= sent or not self._listening)
            return self._scans_received >= sent or not self._stop.is_set()

    def _send_snapshot(self, kind: str, seq: int, snap: Any, stage: Any) -> None:
        """A snapshot for the recording, with the trace window at most at the publishing rate."""
        now = time.monotonic()
        traces = None
        if now - self._traces_sent >= self.spec.publish_period_s:
            traces, self._traces_sent = stage.recent_traces(), now
        self.results.put(Result(kind, seq, (snap, traces)))
