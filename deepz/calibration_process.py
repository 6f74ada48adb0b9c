"""Live calibrations in a process of their own, so that a re-calibration (seconds of small device calls)
never takes the readout's interpreter: in one process the two take turns on its lock, and on an H200 the
readout fell behind during every re-calibration (a calibration took 4.2-4.6 s beside it, 2.5 s alone).

The readout travels to the process pickled, with the scan, and comes back calibrated. Objects of the
``shared`` types (the readout's ID counter) stay here: the process calls their methods back over the same
connection, so IDs given to neurons found in the scan and to neurons entering the field meanwhile never meet.
The process is started at once (it imports torch while the first scan is taken) and ends when its connection
closes, also when this process dies. Should it exit (e.g. killed for memory), calibrations go on in this
process, as in a thread.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import traceback
import weakref
from multiprocessing.connection import Connection
from typing import Any

from deepz.logs import configure_logging
from deepz.process_errors import portable
from deepz.readout_stage import CalibrationJob, LiveReadoutLike, Reference

log = logging.getLogger(__name__)


class CalibrationProcessError(RuntimeError):
    """The calibration process ended without returning a calibration."""


class CalibrationProcess:
    """A ``Calibrator`` (deepz.readout_stage) that calibrates in a child process, one calibration at a time.

    ``shared``: types whose objects stay in this process (their methods are called back from the child);
    ``preload``: modules the child imports before its first calibration (e.g. the readout's); ``device``: the
    torch device the readouts calibrate on, set up in the child at start (a CUDA context takes a second)."""

    def __init__(
        self, shared: tuple[type, ...] = (), preload: tuple[str, ...] = (), device: str = "cpu"
    ) -> None:
        self.shared = shared
        ours, theirs = socket.socketpair()
        self._conn = Connection(ours.detach())
        child_fd = theirs.detach()
        # -P and this process's path ('' is its working directory): the child imports the modules it does
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p or os.getcwd() for p in sys.path)}
        serve_here = "from deepz.calibration_process import serve; serve()"
        self._child = subprocess.Popen([sys.executable, "-P", "-c", serve_here, str(child_fd)],
                                       pass_fds=(child_fd,), env=env, stdin=subprocess.DEVNULL)
        os.close(child_fd)
        self._lock = threading.Lock()
        self._closed, self._ready = False, False
        self._exit_code: int | None = None  # the child's, once it exited before it was closed
        self._end = weakref.finalize(self, _end, self._child, self._conn)  # also when dropped unclosed
        self._conn.send({"log_level": logging.getLogger().getEffectiveLevel(), "preload": list(preload),
                         "device": device})  # fmt: skip

    @property
    def pid(self) -> int:
        return self._child.pid

    @property
    def where(self) -> str:
        if self._exit_code is None:
            return "a process of its own"
        return f"the readout's process (its own exited with code {self._exit_code})"

    def hold(self, readout: LiveReadoutLike) -> tuple[bytes, list[Any]]:
        """The readout pickled as it is now (readout thread), and the shared objects it refers to."""
        shared: list[Any] = []
        return _dumps(readout, lambda obj: _register(obj, self.shared, shared)), shared

    def calibrate(
        self, held: tuple[bytes, list[Any]], job: CalibrationJob
    ) -> tuple[LiveReadoutLike, Reference]:
        """Calibrate the held readout in the child (worker thread; waits, answering its calls back) and return
        it calibrated with its reference; raises what the calibration raised. Once the child is gone (it
        exited, e.g. killed for memory) calibrations are made here, in the calling thread (logged once), so
        the readout goes on; after ``close`` they raise CalibrationProcessError."""
        data, shared = held
        with self._lock:
            if self._closed:
                raise CalibrationProcessError("the calibration process was closed")
            if self._child.poll() is None:
                try:
                    return self._calibrate_there(data, shared, job)
                except (EOFError, OSError) as exc:
                    if self._closed:
                        raise CalibrationProcessError("closed while calibrating") from exc
            if self._exit_code is None:  # the child's end, seen for the first time
                self._end()
                self._exit_code = self._child.returncode
                log.warning("the calibration process exited with code %s; calibrating in this process from "
                            "now on", self._exit_code)  # fmt: skip
        readout = _loads(data, lambda key: shared[key])
        return readout, job.run(readout)

    def _calibrate_there(self, data: bytes, shared: list[Any], job: CalibrationJob) -> tuple[Any, Any]:
        if not self._ready:
            self._ready = self._conn.recv() == ("ready",)
        self._conn.send_bytes(data)
        self._conn.send(job)
        while True:
            message = self._conn.recv()
            if message[0] == "call":
                self._answer(shared, *message[1:])
            elif message[0] == "done":
                return _loads(message[1], lambda key: shared[key])
            else:
                _, error, text = message
                raise error from CalibrationProcessError(f"in the calibration process:\n{text}")

    def _answer(self, shared: list[Any], key: int, method: str, args: tuple) -> None:
        try:
            self._conn.send(("value", getattr(shared[key], method)(*args)))
        except Exception as exc:  # noqa: BLE001 - raised in the child, where the call was made
            self._conn.send(("raised", portable(exc, CalibrationProcessError)))

    def close(self) -> None:
        """End the child (at once: it holds nothing to save); a calibration in progress raises."""
        self._closed = True
        self._end()


def _end(child: subprocess.Popen, conn: Connection) -> None:
    if child.poll() is None:
        child.kill()
    child.wait()
    conn.close()


def _register(obj: Any, types: tuple[type, ...], shared: list[Any]) -> int | None:
    """The key of ``obj`` among the ``shared`` objects if it is of a shared type (added on first sight)."""
    if not types or not isinstance(obj, types):
        return None
    for key, known in enumerate(shared):
        if known is obj:
            return key
    shared.append(obj)
    return len(shared) - 1


def _dumps(obj: Any, persistent_id: Any) -> bytes:
    """``obj`` pickled, with the objects ``persistent_id`` gives a key for sent as that key."""
    buffer = io.BytesIO()
    pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
    pickler.persistent_id = persistent_id  # type: ignore[method-assign]
    pickler.dump(obj)
    return buffer.getvalue()


def _loads(data: bytes, persistent_load: Any) -> Any:
    unpickler = pickle.Unpickler(io.BytesIO(data))
    unpickler.persistent_load = persistent_load  # type: ignore[method-assign]
    return unpickler.load()


# ------------------------------------------------------------------------------------------- the child side
class _CalledBack:
    """A shared object of the parent, in the child: each method call is made there and its value returned."""

    def __init__(self, conn: Connection, key: int) -> None:
        self._conn, self._key = conn, key

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)

        def call(*args: Any) -> Any:
            self._conn.send(("call", self._key, method, args))
            kind, value = self._conn.recv()
            if kind == "raised":
                raise value
            return value

        return call

    def __deepcopy__(self, memo: dict) -> _CalledBack:
        return self  # shared, as the object it stands for


def serve() -> None:
    """The child: calibrate each readout sent, until the connection closes (the parent ended or is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it closes this process
    conn = Connection(int(sys.argv[1]))
    try:
        setup = conn.recv()
    except EOFError:
        return
    configure_logging(setup["log_level"], origin="calibration process")
    for module in setup["preload"]:
        __import__(module)
    import torch

    # one CPU thread: the readout keeps the cores (with as many threads as the run's beside it, the two
    # processes' thread pools spin against each other: the readout read half as many frames at 64x64)
    torch.set_num_threads(1)
    torch.zeros(1, device=setup["device"])  # the device's context, made now
    conn.send(("ready",))
    while True:
        try:
            data = conn.recv_bytes()
            job: CalibrationJob = conn.recv()
        except (EOFError, OSError):
            return
        try:
            readout = _loads(data, lambda key: _CalledBack(conn, key))
            reference = job.run(readout)
            reply = ("done", _dumps((readout, reference), _key_of))
        except Exception as exc:  # noqa: BLE001 - the parent raises it
            reply = ("failed", portable(exc, CalibrationProcessError), traceback.format_exc())
        try:
            conn.send(reply)
        except OSError:
            return


def _key_of(obj: Any) -> int | None:
    return obj._key if isinstance(obj, _CalledBack) else None

