"""ArraySource: a FrameSource over recorded frames (numpy or zarr arrays), for replay and tests."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from acquire.frames import SourceStats
from wire.frames import FrameMeta


class FrameStack(Protocol):
    """(T, H, W) uint16 frames read one at a time: a numpy array, or a recording's (storage.RecordedArray)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> Any: ...

    def __getitem__(self, index: int, /) -> Any: ...


class ArraySource:
    """Replays (T, H, W) uint16 frames with their metadata, as fast as asked (``rate_hz=None``) or paced.

    ``metas`` gives one FrameMeta per frame; when None, metadata is synthesised (image_number = index,
    times at ``rate_hz`` or 1 frame per unit time, focus 0, exposure 0, nothing lost).
    """

    def __init__(
        self,
        frames: FrameStack,
        metas: Sequence[FrameMeta] | None = None,
        rate_hz: float | None = None,
        *,
        pixel_size_um: float = 0.325,
    ) -> None:
        if len(frames.shape) != 3:
            raise ValueError(
                f"ArraySource needs a (T, H, W) array of frames, got shape {tuple(frames.shape)}; "
                "pass a stack of 2-D frames (e.g. a recording's raw array)."
            )
        if np.dtype(frames.dtype) != np.uint16:
            raise ValueError(
                f"ArraySource needs uint16 frames, got {frames.dtype}; convert with .astype(np.uint16)."
            )
        if metas is not None and len(metas) != frames.shape[0]:
            raise ValueError(
                f"ArraySource got {frames.shape[0]} frames but {len(metas)} metadata records; "
                "pass one per frame."
            )
        if rate_hz is not None and rate_hz <= 0:
            raise ValueError(f"rate_hz must be positive or None (as fast as possible), got {rate_hz}.")
        self._frames = frames
        self._metas = metas
        self._rate_hz = rate_hz
        self._pixel_size_um = float(pixel_size_um)
        self._running = False
        self._delivered = 0
        self._lost = 0
        self._t_start = 0.0

    @property
    def frame_shape(self) -> tuple[int, int]:
        """(H, W) of the frames."""
        return (int(self._frames.shape[1]), int(self._frames.shape[2]))

    @property
    def pixel_size_um(self) -> float:
        """Pixel size in the sample plane."""
        return self._pixel_size_um

    @property
    def stats(self) -> SourceStats:
        """Frames delivered so far, frames the recording marks as lost, delivered rate."""
        elapsed = time.perf_counter() - self._t_start if self._delivered else 0.0
        rate = self._delivered / elapsed if elapsed > 0 else 0.0
        return SourceStats(acquired=self._delivered, lost=self._lost, overflows=0, rate_hz=rate)

    def start(self) -> None:
        """Rewind to the first frame."""
        self._running = True
        self._delivered = 0
        self._lost = 0
        self._t_start = time.perf_counter()

    def stop(self) -> None:
        """End iteration after the current frame."""
        self._running = False

    def _meta(self, i: int) -> FrameMeta:
        if self._metas is not None:
            return self._metas[i]
        dt = 1.0 / self._rate_hz if self._rate_hz else 1.0
        return FrameMeta(i, i, i * dt, time.time(), 0.0, 0.0, 0)

    def frames(self) -> Iterator[tuple[np.ndarray, FrameMeta]]:
        """Yield (frame, meta) in order; paced at ``rate_hz`` when given."""
        if not self._running:
            self.start()
        for i in range(self._frames.shape[0]):
            if not self._running:
                return
            if self._rate_hz:
                delay = self._t_start + i / self._rate_hz - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
            meta = self._meta(i)
            self._delivered += 1
            self._lost += meta.lost_before
            yield np.asarray(self._frames[i]), meta
        self._running = False

    def __enter__(self) -> ArraySource:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
