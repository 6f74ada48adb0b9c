"""Simulated specimens for the activity evaluation: a seeded worm, or a real targettrack neuron arrangement
given the simulated worm's motion, activity and optics."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from acquire.sim import SimConfig, WormSimulator
from deepz.lab.scaffold import sim_config

__all__ = ["TARGETTRACK_EXAMPLES", "simulated_worm", "targettrack_worm"]

TARGETTRACK_EXAMPLES = ("ex2/gt", "ex3/gt", "ex4/gt", "ex6/gt")  # ex5 gt = ex3 gt; tar frames: same worms


def simulated_worm(seed: int, size: int, bleach_half_life_s: float = 0.0) -> WormSimulator:
    """The default simulated microscope and worm for a seed, with a square camera of ``size`` pixels, its
    nuclei bleaching with the given half-life (s; 0 = not)."""
    if size < 32:
        raise ValueError(f"--size {size} is too small; use at least 32 pixels.")
    return WormSimulator(_bleaching(sim_config(size, seed=seed), bleach_half_life_s))


def _bleaching(config: SimConfig, half_life_s: float) -> SimConfig:
    """``config`` with its nuclei bleaching at ``half_life_s`` (0 = not)."""
    worm = config.worm.model_copy(update={"bleach_half_life_s": half_life_s})
    return config.model_copy(update={"worm": worm})


def targettrack_worm(
    root: Path, example: str, seed: int, size: int, bleach_half_life_s: float = 0.0
) -> WormSimulator:
    """A simulated worm whose nuclei sit where a targettrack volume's annotated nuclei are (centred in the
    field); motion, activity, brightness, bleaching and optics stay the simulator's."""
    from track.targettrack import DEFAULT_VOXEL_UM

    name, which = example.split("/")
    path = Path(root) / "data" / "data_points" / name / f"pts_{which}.npy"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; pass the targettrack folder holding data/data_points.")
    pts = np.load(path)
    pts = pts[np.isfinite(pts).all(axis=1)]
    zyx = pts[:, ::-1] * np.asarray(DEFAULT_VOXEL_UM)  # (x, y, z) voxels -> (z, y, x) um
    zyx -= zyx.mean(axis=0)
    base = _bleaching(sim_config(size, seed=seed), bleach_half_life_s)
    worm = base.worm.model_copy(update={"n_neurons": len(zyx)})
    sim = WormSimulator(base.model_copy(update={"worm": worm}))
    sim.worm.body_sud = np.column_stack([zyx[:, 2], zyx[:, 1], zyx[:, 0]])  # along the body, sideways, depth
    return sim
