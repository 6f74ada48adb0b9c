"""Shared helpers for the engine tests: a tiny random-weight model and matching DPMs."""

from __future__ import annotations

import numpy as np

from deepz.lab.engine_bench import random_frames, random_model
from infer.dpm import uniform_dpm, uniform_planes
from infer.model import UNetConfig
from infer.model_io import LoadedModel

TINY = UNetConfig(base_channels=4, depth=2, max_channels=16)
SHAPE = (32, 48)


def tiny_model(seed: int = 0) -> LoadedModel:
    """A small random-weight LoadedModel (fast on the CPU), axial range +/-10 um."""
    return random_model(TINY, seed=seed)


def dpm(planes: int = 4, shape: tuple[int, int] = SHAPE, reach_um: float = 8.0) -> np.ndarray:
    """(K, H, W) uniform DPMs from -reach to +reach um."""
    return uniform_dpm(uniform_planes(-reach_um, reach_um, planes), shape)


def frames(n: int = 1, shape: tuple[int, int] = SHAPE, seed: int = 0) -> np.ndarray:
    """Fresh random uint16 frames above a 100 ADU offset."""
    return random_frames((n, *shape), seed)
