"""Assembles raw frames into whole shards and writes them on an IO thread, double-buffered."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from storage.sinks import ArraySink


class ShardBuffer:
    """Two shard-sized buffers: one fills while the other is compressed and written, so IO overlaps intake."""

    def __init__(
        self, sink: ArraySink, shard_frames: int, frame_shape: tuple[int, int], io: ThreadPoolExecutor
    ):
        self._sink = sink
        self._shard = shard_frames
        self._io = io
        self._buffers = [np.empty((shard_frames, *frame_shape), np.uint16) for _ in range(2)]
        self._futures: list[list[Future]] = [[], []]
        self._active = 0
        self.total = 0
        """Frames added so far (frame t is the t-th added)."""
        self._handed = 0

    def add(self, image: np.ndarray) -> None:
        """Copy one frame in; a completed shard goes to the IO thread and the other buffer takes over."""
        self._buffers[self._active][self.total % self._shard] = image
        self.total += 1
        if self.total % self._shard == 0:
            self._hand_over()
            self._active ^= 1
            self._wait(self._active)

    def flush(self) -> None:
        """Write every frame added so far (a partial shard too) and wait until all of it is on disk."""
        self._hand_over()
        self._wait(0)
        self._wait(1)

    def _hand_over(self) -> None:
        start, end = self._handed, self.total
        if end == start:
            return
        first = start % self._shard
        block = self._buffers[self._active][first : first + end - start]
        self._futures[self._active].append(self._io.submit(self._write, start, block))
        self._handed = end

    def _write(self, start: int, block: np.ndarray) -> None:
        self._sink.grow(start + len(block))
        self._sink.write(start, block)

    def _wait(self, index: int) -> None:
        futures, self._futures[index] = self._futures[index], []
        for future in futures:
            future.result()
