"""The simulated microscope: a C. elegans head imaged by a wide-field (or confocal-like) microscope."""

from acquire.sim.config import CameraConfig, OpticsConfig, SimConfig, WormConfig
from acquire.sim.sample import GroundTruth
from acquire.sim.simulator import WormSimulator

__all__ = ["CameraConfig", "GroundTruth", "OpticsConfig", "SimConfig", "WormConfig", "WormSimulator"]
