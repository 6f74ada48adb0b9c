"""A frame source's running totals (the FrameSource interface itself is in deepz.protocols, with the other
stage interfaces)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SourceStats:
    """Running totals of a frame source: frames delivered, frames lost, overflow events, delivered rate."""

    acquired: int = 0
    lost: int = 0
    overflows: int = 0
    rate_hz: float = 0.0
