"""Hand-over between pipeline threads, and the running figures each stage reports."""

from __future__ import annotations

import collections
import threading
import time
from typing import Generic, TypeVar

import numpy as np

T = TypeVar("T")


class Closed(Exception):
    """The hand-over was closed and holds nothing more."""


class Mailbox(Generic[T]):
    """One-item hand-over between two threads.

    ``latest=True`` (live): a put replaces an item not yet taken, which the put returns so the caller can
    record it as skipped; the producer never waits. ``latest=False`` (replay): a put waits until the consumer
    has taken the previous item, so every item is processed.
    """

    def __init__(self, *, latest: bool) -> None:
        self.latest = latest
        self._item: T | None = None
        self._has_item = False
        self._closed = False
        self._cond = threading.Condition()

    def put(self, item: T) -> T | None:
        """Offer an item; returns the item it displaced (latest mode) or None."""
        with self._cond:
            if not self.latest:
                self._cond.wait_for(lambda: not self._has_item or self._closed)
            if self._closed:
                raise Closed
            displaced = self._item if self._has_item else None
            self._item, self._has_item = item, True
            self._cond.notify_all()
            return displaced

    def take(self, timeout: float | None = None) -> T:
        """Wait for an item and remove it; raises Closed once closed and empty, TimeoutError on timeout."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._has_item or self._closed, timeout):
                raise TimeoutError
            if not self._has_item:
                raise Closed
            item, self._item, self._has_item = self._item, None, False
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more puts; the consumer drains what is there and then gets Closed."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def depth(self) -> int:
        return int(self._has_item)


class RateMeter:
    """Events per second over a sliding window of recent event times."""

    def __init__(self, window_s: float = 2.0) -> None:
        self.window_s = window_s
        self.count = 0
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def tick(self, now: float | None = None) -> None:
        now = time.perf_counter() if now is None else now
        with self._lock:
            self.count += 1
            self._times.append(now)
            while self._times and now - self._times[0] > self.window_s:
                self._times.popleft()

    def rate(self, now: float | None = None) -> float:
        now = time.perf_counter() if now is None else now
        with self._lock:
            recent = [t for t in self._times if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


class LatencyRecorder:
    """Latencies in milliseconds: all of them for the summary, percentiles on demand."""

    def __init__(self) -> None:
        self._values: list[float] = []
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self._values.append(seconds * 1e3)

    def percentiles(self, last: int | None = None) -> dict[str, float | None]:
        """p50 / p99 / max in ms over all (or the ``last`` N) values; None when there are none."""
        with self._lock:
            values = np.asarray(self._values[-last:] if last else self._values)
        if values.size == 0:
            return {"p50": None, "p99": None, "max": None}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50": round(float(p50), 3), "p99": round(float(p99), 3), "max": round(float(values.max()), 3)}

    @property
    def count(self) -> int:
        return len(self._values)


def window_traces(
    history: list[tuple[float, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Recent (time s, ids, dF/F) steps as ids (M,), times (W,) and dF/F (M, W), NaN where a neuron had none."""
    if not history:
        return np.zeros(0, np.int64), np.zeros(0), np.zeros((0, 0), np.float32)
    ids = np.unique(np.concatenate([h[1] for h in history])).astype(np.int64)
    dff = np.full((ids.size, len(history)), np.nan, np.float32)
    for column, (_, step_ids, step_dff) in enumerate(history):
        dff[np.searchsorted(ids, step_ids), column] = step_dff
    return ids, np.array([h[0] for h in history]), dff
