"""Per-frame metadata: what a frame source yields with each frame and what the recording stores beside it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """Metadata of one camera frame. ``lost_before`` counts the frames lost right before this one (camera or
    buffer gaps, and in a recording also the frames its writer could not take); ``volume_skipped`` says that
    inference did not make this frame a volume. ``index`` is the frame's place in the stream; a recording
    stores it as the frame's position, not as a field."""

    index: int
    image_number: int
    camera_time_s: float
    host_time_s: float
    focus_z_um: float
    exposure_ms: float
    lost_before: int
    volume_skipped: bool = False
