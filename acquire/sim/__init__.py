"""The simulated microscope: a C. elegans head imaged by a wide-field (or confocal-like) microscope.

``WormSimulator`` renders frames, focal stacks and ground truth; ``load_simulated_core`` (imported on first
use, it needs pymmcore-plus) returns a UniMMCore with the simulated camera, focus stage and shutter.
"""

from typing import Any

from acquire.sim.config import CameraConfig, OpticsConfig, SimConfig, WormConfig
from acquire.sim.sample import GroundTruth
from acquire.sim.simulator import WormSimulator

__all__ = [
    "CameraConfig",
    "GroundTruth",
    "OpticsConfig",
    "SimConfig",
    "WormConfig",
    "WormSimulator",
    "load_simulated_core",
]


def __getattr__(name: str) -> Any:
    if name == "load_simulated_core":
        from acquire.sim.devices import load_simulated_core

        return load_simulated_core
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
