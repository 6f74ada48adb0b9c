"""The oracle bound of single-frame demixing on a simulated run, scored like the activity methods.

Every neuron whose light reaches the frame is demixed in each frame with the simulator's own stamps at its
true position (non-negative least squares with a constant background). It reads the simulator's truth, so it
is no method a rig could run: it measures how much of the targets the specimen's physics (neuron density,
defocus, photon noise) leaves within reach, and so how much of a method's shortfall is its model of the frame.
With a lateral position error it measures how precisely a method must follow the neurons for that.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from acquire.sim import WormSimulator
from acquire.sim.render import add_stamps
from deepz.lab.activity_eval import ActivityRunConfig
from deepz.lab.activity_score import ActivityScorer, NeuronScores
from track.readout.demix import Demixer

__all__ = ["ORACLE", "oracle_bound"]

ORACLE = "oracle bound"
REACH_UM = 14.0  # neurons this far from focus still put light on the frame (the scored ones reach 10 um)
MARGIN_PX = 40  # and so do neurons this far outside the field


def oracle_bound(
    sim: WormSimulator,
    cfg: ActivityRunConfig,
    every: int = 5,
    progress: Callable[[int], None] | None = None,
    lateral_error_um: float = 0.0,
) -> NeuronScores:
    """Scores of the oracle demixing of every ``every``-th camera frame of the run ``cfg`` describes (after
    its first scan, through the re-scans too); ``progress`` gets the frames done.

    ``lateral_error_um``: each neuron's stamp is placed this far (median; a random direction, 2D Gaussian)
    from its true place, an error drawn afresh every re-scan interval (``cfg.recalibrate_s``; once for a run
    without one) and held until the next, as a followed position's is."""
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}.")
    if lateral_error_um < 0:
        raise ValueError(f"lateral_error_um must be >= 0, got {lateral_error_um}.")
    px = sim.pixel_size_um
    sigma_px = lateral_error_um / np.sqrt(2 * np.log(2)) / px  # a Rayleigh median
    segment_frames = round(cfg.recalibrate_s * cfg.rate_hz) or cfg.n_frames
    h, w = sim.frame_shape
    bank = sim.stamps()
    scorer = ActivityScorer((h * px, w * px))
    demixer = Demixer(max_rounds=50)
    t_start = cfg.scan_seconds  # the frames after the first scan, as the methods read them
    for k in range(0, cfg.n_frames, every):
        t_s = t_start + k / cfg.rate_hz
        truth = sim.truth(t_s)
        error_px = np.random.default_rng([k // segment_frames, 17]).normal(0, sigma_px, (len(truth.ids), 2))
        yx = truth.positions_um[:, 1:] / px + error_px
        near = (np.abs(truth.positions_um[:, 0]) < REACH_UM) & np.all(
            (yx > -MARGIN_PX) & (yx < np.array([h, w]) + MARGIN_PX), axis=1
        )
        keep = np.flatnonzero(near)
        columns = np.zeros((len(keep), h * w), np.float32)
        for row, i in enumerate(keep):
            image = columns[row].reshape(h, w)  # a view: the stamp lands in its column
            add_stamps(image, bank, yx[i : i + 1], truth.positions_um[i : i + 1, 0],
                       sim.worm.size_class[i : i + 1], np.ones(1))  # fmt: skip
        stamps = torch.from_numpy(columns).double()
        frame = torch.from_numpy(sim.render(t_s, 0.0).astype(np.float64).reshape(-1))
        gram = torch.zeros(len(keep) + 1, len(keep) + 1, dtype=torch.float64)
        gram[:-1, :-1] = stamps @ stamps.T
        gram[:-1, -1] = gram[-1, :-1] = stamps.sum(dim=1)
        gram[-1, -1] = h * w
        demixer.set_gram(gram)
        result = demixer.solve(torch.cat([stamps @ frame, frame.sum()[None]]))
        brightness = result.brightness.double().numpy()
        placed = np.column_stack([truth.positions_um[keep, 0], yx[keep] * px])
        scorer.add(ORACLE, truth, truth.ids[keep], placed, brightness)
        if progress is not None:
            progress(min(k + every, cfg.n_frames))
    return scorer.neuron_scores(ORACLE)
