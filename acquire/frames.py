"""The frame-source interface shared by live acquisition and replay: frames plus per-frame metadata."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, runtime_checkable

import numpy as np

from wire.frames import FrameMeta


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Running totals of a frame source: frames delivered, frames lost, overflow events, delivered rate."""

    acquired: int = 0
    lost: int = 0
    overflows: int = 0
    rate_hz: float = 0.0


@runtime_checkable
class FrameSource(Protocol):
    """Anything that yields uint16 (H, W) frames with FrameMeta: a camera, the simulator, a recording."""

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    @property
    def pixel_size_um(self) -> float: ...

    @property
    def stats(self) -> SourceStats: ...

    def start(self) -> None: ...

    def frames(self) -> Iterator[tuple[np.ndarray, FrameMeta]]: ...

    def stop(self) -> None: ...

    def __enter__(self) -> FrameSource: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...
