"""The one data model every view draws: a snapshot of frame, volume, tracks and traces at one time."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from wire.messages import Message


@dataclass(frozen=True)
class ViewState:
    """What the viewer shows at one instant, from a live message or a recording; any array may be None."""

    t: int
    frame: np.ndarray | None = None
    volume: np.ndarray | None = None
    track_ids: np.ndarray | None = None
    track_positions_um: np.ndarray | None = None
    track_dff: np.ndarray | None = None  # (N,) the readout's current dF/F of each marked neuron
    track_confidence: np.ndarray | None = None  # (N,) its signal-to-noise ratio (readout's confidence)
    trace_ids: np.ndarray | None = None
    traces_dff: np.ndarray | None = None
    trace_t: np.ndarray | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    sent: float | None = None

    @property
    def pixel_size_um(self) -> float:
        """Camera pixel size in um (1.0 when the source does not say, so views fall back to pixels)."""
        value = self.meta.get("pixel_size_um")
        return float(value) if value else 1.0

    @property
    def volume_pixel_size_um(self) -> float:
        """Pixel size of the volume planes in um: finer than the camera's after super-resolution."""
        value = self.meta.get("volume_pixel_size_um")
        return float(value) if value else self.pixel_size_um

    @property
    def planes_um(self) -> np.ndarray | None:
        """Sample z of each volume plane in um, or plane indices when the source does not say."""
        planes = self.meta.get("planes_um")
        if planes is not None and (self.volume is None or len(planes) == self.volume.shape[0]):
            return np.asarray(planes, dtype=np.float64)
        return None if self.volume is None else np.arange(self.volume.shape[0], dtype=np.float64)

    @classmethod
    def from_message(cls, message: Message) -> ViewState:
        """Build a state from a decoded pipeline message (wire.messages spec)."""
        a = message.arrays
        return cls(
            t=message.t,
            frame=a.get("frame"),
            volume=a.get("volume"),
            track_ids=a.get("track_ids"),
            track_positions_um=a.get("track_positions_um"),
            track_dff=a.get("track_dff"),
            track_confidence=a.get("track_confidence"),
            trace_ids=a.get("trace_ids"),
            traces_dff=a.get("traces_dff"),
            trace_t=a.get("trace_t"),
            stats=dict(message.stats),
            meta=dict(message.meta),
            sent=message.sent,
        )
