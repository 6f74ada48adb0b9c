"""Live per-neuron activity from single frames at focus: a reference set and defocus response from a
calibration focal scan, then each frame's motion and every reference neuron's demixed brightness."""

from track.readout.live import LiveReadout, ReadoutConfig, ReadoutState, camera_rate_dff
from track.readout.reference import Reference, build_reference
from track.readout.stamps import Optics, StampModel

__all__ = [
    "LiveReadout", "Optics", "ReadoutConfig", "ReadoutState", "Reference", "StampModel", "build_reference",
    "camera_rate_dff",
]
