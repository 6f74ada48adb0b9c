"""A shared-memory ring of fixed-shape arrays with sequence numbers, between one producer and a few readers in
other processes.

The producer never waits: it writes into a slot no reader is copying, overwriting the oldest one when all are
full (a frame no reader took is then *displaced*). A reader takes either the newest item it has not seen,
skipping what it fell behind on, or the next one in order, seeing every item while it keeps up. For reader 0 (inference) every sequence number gets a fate, kept in shared
memory: taken, or skipped (displaced, or older than the one it took); the producer reads fates to mark each
recorded frame. A short lock guards the slot table only (never a copy); a producer that cannot get it in time
(a reader died holding it) gets RingBroken instead of waiting.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np

__all__ = ["Closed", "FrameRing", "RingBroken", "RingSpec", "Taken"]

EMPTY, WRITING = -1, -2
UNDECIDED, TAKEN, SKIPPED = 0, 1, 2
FATES = 8192
"""Fate entries kept (by sequence number modulo this): far more than the frames waiting for one."""


class Closed(Exception):
    """The producer closed the ring and the reader has taken everything newer than what it had."""


class RingBroken(RuntimeError):
    """The slot table's lock was not released in time: a reader died or stalled while holding it."""


@dataclass(frozen=True)
class RingSpec:
    """What a process needs to attach to a ring: the shared block's name, the layout and the lock."""

    name: str
    slots: int
    shape: tuple[int, ...]
    dtype: str
    readers: int
    meta: int
    lock: Any


@dataclass(frozen=True)
class Taken:
    """An item a reader took: its sequence number, a copy of the array, and its float metadata."""

    seq: int
    array: np.ndarray
    meta: np.ndarray


def _check_room(nbytes: int, folder: str = "/dev/shm") -> None:
    """Refuse a ring the shared-memory filesystem cannot hold (writing past its end kills the process with
    SIGBUS; containers often give /dev/shm only 64 MB)."""
    if not os.path.isdir(folder):
        return
    free = shutil.disk_usage(folder).free
    if nbytes > free:
        raise OSError(f"the shared-memory ring needs {nbytes / 1e6:.0f} MB but {folder} has {free / 1e6:.0f} MB "
                      "free: give it more (docker run --shm-size=1g) or run inference in threads (--compute thread)")


class FrameRing:
    """Create with FrameRing.create(...) in the producer's process; attach elsewhere with FrameRing(spec)."""

    def __init__(self, spec: RingSpec, *, _create: bool = False) -> None:
        self.spec = spec
        n, r, m = spec.slots, spec.readers, spec.meta
        item = int(np.prod(spec.shape)) * np.dtype(spec.dtype).itemsize
        sizes = {"head": 2, "seq": n, "reading": n * r, "last": r, "fate_seq": FATES, "fate": FATES,
                 "counts": 2}  # fmt: skip
        table = sum(sizes.values()) * 8
        total = table + n * m * 8 + n * item
        if _create:
            _check_room(total)
        self._shm = (shared_memory.SharedMemory(spec.name, create=True, size=total) if _create
                     else shared_memory.SharedMemory(spec.name))  # fmt: skip
        self._owner = _create
        buf, offset = self._shm.buf, 0
        views: dict[str, np.ndarray] = {}
        for key, size in sizes.items():
            views[key] = np.ndarray((size,), np.int64, buf, offset)
            offset += size * 8
        self._head = views["head"]  # [closed, newest seq put]
        self._seq = views["seq"]  # per slot: its item's seq, EMPTY, or WRITING
        self._reading = views["reading"].reshape(n, r)  # per slot and reader: 1 while copying out
        self._last = views["last"]  # per reader: the newest seq it took
        self._fate_seq, self._fate = views["fate_seq"], views["fate"]
        self._counts = views["counts"]  # [displaced items, items put]
        self._meta = np.ndarray((n, m), np.float64, buf, offset)
        offset += n * m * 8
        self._data = np.ndarray((n, *spec.shape), np.dtype(spec.dtype), buf, offset)
        self._lock = spec.lock
        if _create:
            self._seq[:] = EMPTY
            self._last[:] = -1
            self._fate_seq[:] = -1
            self._head[:] = (0, -1)

    @classmethod
    def create(cls, shape: tuple[int, ...], dtype: Any, *, slots: int = 8, readers: int = 1, meta: int = 2,
               lock: Any = None) -> FrameRing:
        """A new ring of ``slots`` arrays (``shape``, ``dtype``) with ``meta`` floats each, for ``readers``;
        ``lock``: a multiprocessing lock the readers' processes get at their start (default: a new one)."""
        if slots < readers + 2:
            raise ValueError(f"a ring for {readers} reader(s) needs at least {readers + 2} slots, got {slots}")
        lock = lock if lock is not None else mp.get_context("spawn").Lock()
        name = f"deepz-{np.random.default_rng().integers(1 << 62):x}"
        spec = RingSpec(name, slots, tuple(int(s) for s in shape), np.dtype(dtype).str, readers, meta, lock)
        return cls(spec, _create=True)

    # --- producer -------------------------------------------------------------------------------
    def put(self, seq: int, array: np.ndarray, meta: tuple[float, ...] = (), lock_timeout_s: float = 0.5,
            wait_s: float = 0.0) -> int | None:
        """Store item ``seq`` (increasing); returns the seq it displaced untaken by reader 0, if any.

        ``wait_s``: wait that long for reader 0 to take an item before displacing one (0: never wait).
        """
        deadline = time.perf_counter() + wait_s
        while True:
            with self._locked(lock_timeout_s):
                slot, displaced = self._free_slot(displace=time.perf_counter() >= deadline)
                if slot is not None:
                    self._seq[slot] = WRITING
                    break
            time.sleep(0.0005)
        self._data[slot] = array
        self._meta[slot, : len(meta)] = meta
        with self._locked(lock_timeout_s):
            self._seq[slot] = seq
            self._head[1] = seq
            self._counts[1] += 1
            if displaced is not None:
                self._counts[0] += 1
        return displaced

    def _free_slot(self, displace: bool) -> tuple[int | None, int | None]:
        """An empty slot, else the oldest one reader 0 is done with, else (``displace``) the oldest one no
        reader is copying, whose item reader 0 then never takes; (slot, displaced seq)."""
        idle = ~self._reading.any(axis=1) & (self._seq != WRITING)
        empty = np.flatnonzero(idle & (self._seq == EMPTY))
        if empty.size:
            return int(empty[0]), None
        done = [int(i) for i in np.flatnonzero(idle) if self.fate(int(self._seq[i])) is not None]
        if done:
            return min(done, key=lambda i: self._seq[i]), None
        if not displace:
            return None, None
        candidates = np.flatnonzero(idle)
        slot = int(candidates[np.argmin(self._seq[candidates])])
        old = int(self._seq[slot])
        if self._decide(old, SKIPPED):
            return slot, old
        return slot, None

    def fate(self, seq: int) -> bool | None:
        """True when reader 0 took item ``seq``, False when it skipped it, None while undecided."""
        i = seq % FATES
        if self._fate_seq[i] != seq:
            return None
        return bool(self._fate[i] == TAKEN)

    def close(self, lock_timeout_s: float = 0.5) -> None:
        """No more items: readers take what is newer than theirs, then get Closed."""
        with contextlib.suppress(RingBroken), self._locked(lock_timeout_s):
            self._head[0] = 1

    def settle(self, lock_timeout_s: float = 0.5) -> None:
        """After the readers ended: every item still undecided was skipped by reader 0."""
        with contextlib.suppress(RingBroken), self._locked(lock_timeout_s):
            for seq in self._seq[self._seq >= 0]:
                self._decide(int(seq), SKIPPED)

    @property
    def displaced(self) -> int:
        """Items overwritten before reader 0 took them."""
        return int(self._counts[0])

    # --- readers --------------------------------------------------------------------------------
    def take_newest(self, reader: int = 0, timeout_s: float | None = None, poll_s: float = 0.001) -> Taken:
        """Wait for an item newer than this reader's last and copy it out; older untaken ones are skipped.

        Raises Closed once the ring is closed and nothing newer is left, TimeoutError after ``timeout_s``.
        """
        return self._take_newer(reader, timeout_s, poll_s, newest=True)

    def backlog(self, reader: int) -> int:
        """Items put since this reader's last take (read without the lock: a hint for scheduling)."""
        newest, last = int(self._head[1]), int(self._last[reader])
        return newest - last if newest >= 0 else 0

    def take_next(self, reader: int = 0, timeout_s: float | None = None, poll_s: float = 0.001) -> Taken:
        """Like take_newest, but the oldest item newer than this reader's last: a reader that keeps up sees
        every item in order; one that falls behind by more than the ring skips what was overwritten."""
        return self._take_newer(reader, timeout_s, poll_s, newest=False)

    def _take_newer(self, reader: int, timeout_s: float | None, poll_s: float, newest: bool) -> Taken:
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        while True:
            if self._head[1] <= self._last[reader] and not self._head[0]:  # nothing new: no need for the lock
                if deadline is not None and time.perf_counter() > deadline:
                    raise TimeoutError
                time.sleep(poll_s)
                continue
            with self._locked(None):
                newer = np.flatnonzero(self._seq > self._last[reader])
                if newer.size:
                    pick = np.argmax if newest else np.argmin
                    return self._copy_out(int(newer[pick(self._seq[newer])]), reader)
                if self._head[0]:
                    raise Closed
            if deadline is not None and time.perf_counter() > deadline:
                raise TimeoutError
            time.sleep(poll_s)

    def take(self, seq: int, reader: int = 0) -> Taken | None:
        """Copy out item ``seq`` if the ring still holds it (None when it was overwritten)."""
        with self._locked(None):
            slots = np.flatnonzero(self._seq == seq)
            if not slots.size:
                return None
            return self._copy_out(int(slots[0]), reader)

    def _copy_out(self, slot: int, reader: int) -> Taken:
        """Called holding the lock: mark the slot read, copy it without the lock, release it."""
        seq = int(self._seq[slot])
        if reader == 0:
            for older in self._seq[(self._seq >= 0) & (self._seq < seq)]:
                self._decide(int(older), SKIPPED)
            self._decide(seq, TAKEN)
        self._last[reader] = max(int(self._last[reader]), seq)
        self._reading[slot, reader] = 1
        self._lock.release()
        try:
            taken = Taken(seq, self._data[slot].copy(), self._meta[slot].copy())
        finally:
            self._lock.acquire()
            self._reading[slot, reader] = 0
        return taken

    def _decide(self, seq: int, fate: int) -> bool:
        """Record seq's fate unless it has one; True when this call decided it."""
        i = seq % FATES
        if self._fate_seq[i] == seq:
            return False
        self._fate[i], self._fate_seq[i] = fate, seq
        return True

    # --- both -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self, timeout_s: float | None) -> Iterator[None]:
        if not self._lock.acquire(True, timeout_s):
            raise RingBroken(f"the shared ring's lock was held over {timeout_s} s: its reader died or stalled")
        try:
            yield
        finally:
            self._lock.release()

    def detach(self) -> None:
        """Release this process's view; the creating process also removes the shared block."""
        for name in ("_head", "_seq", "_reading", "_last", "_fate_seq", "_fate", "_counts", "_meta", "_data"):
            setattr(self, name, None)
        with contextlib.suppress(BufferError):
            self._shm.close()
        if self._owner:
            with contextlib.suppress(FileNotFoundError):
                self._shm.unlink()
