"""Online linking: stable ids on known motion, gap closing, new and lost tracks, drift, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from track.detect import Detections
from track.evaluate import TrackingScorer
from track.live import LiveTracker, LiveTrackerConfig
from track.online import OnlineTracker, TrackerConfig
from deepz.lab.blobs import BlobConfig, BlobWorld

BASE = np.array([[0.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 5.0], [4.0, 4.0, 4.0], [2.0, 8.0, 1.0]])


def frame(t: int, rows: np.ndarray, seed: int = 0) -> tuple[Detections, np.ndarray]:
    """Points of BASE moving at 0.3 um/frame in x, shuffled; also returns which BASE row each detection is."""
    rng = np.random.default_rng(seed + t)
    order = rng.permutation(rows)
    pos = BASE[order] + [0.0, 0.0, 0.3 * t] + rng.normal(0, 0.05, (len(order), 3))
    return Detections(pos, np.full(len(order), 10.0 + t, np.float32)), order


def run(n_frames: int, present=lambda t: np.arange(len(BASE)), config: TrackerConfig | None = None):
    tracker = OnlineTracker(config or TrackerConfig(max_gap=4))
    truth_to_id: dict[int, set[int]] = {}
    states = []
    for t in range(n_frames):
        det, order = frame(t, present(t))
        state = tracker.update(t, det)
        for true_row, pos in zip(order, det.positions_um, strict=True):
            tid = int(state.ids[np.flatnonzero((state.positions_um == pos).all(axis=1))[0]])
            truth_to_id.setdefault(int(true_row), set()).add(tid)
        states.append(state)
    return truth_to_id, states


def test_ids_stable_under_motion_and_shuffling():
    truth_to_id, states = run(30)
    assert all(len(ids) == 1 for ids in truth_to_id.values())
    assert sorted(i for ids in truth_to_id.values() for i in ids) == list(range(len(BASE)))
    assert np.all(np.diff(states[-1].ids) > 0)  # rows sorted by id


def test_vanishing_neuron_keeps_its_id_within_the_gap():
    truth_to_id, states = run(20, present=lambda t: np.arange(5) if not 5 <= t < 8 else np.arange(4))
    assert len(truth_to_id[4]) == 1
    assert all(len(s.lost_ids) == 0 for s in states)


def test_long_absence_ends_track_and_return_gets_new_id():
    truth_to_id, states = run(20, present=lambda t: np.arange(5) if not 5 <= t < 12 else np.arange(4))
    first, second = sorted(truth_to_id[4])
    assert second == 5
    assert [int(i) for s in states for i in s.lost_ids] == [first]
    assert [int(i) for s in states for i in s.new_ids] == [0, 1, 2, 3, 4, 5]


def test_global_drift_larger_than_the_gate_is_followed():
    tracker = OnlineTracker(TrackerConfig(max_distance_um=1.0, velocity_smoothing=0.0))
    ids = [tracker.update(t, Detections(BASE + [0, 0, 3.0 * t], np.ones(len(BASE)))).ids for t in range(5)]
    assert all(np.array_equal(i, np.arange(len(BASE))) for i in ids)
    no_drift = OnlineTracker(
        TrackerConfig(max_distance_um=1.0, velocity_smoothing=0.0, drift_correction=False)
    )
    for t in range(3):
        last = no_drift.update(t, Detections(BASE + [0, 0, 3.0 * t], np.ones(len(BASE))))
    assert len(last.new_ids) >= 3  # without the drift estimate most neurons restart as new tracks


def test_deterministic_and_empty_frames():
    a = [s.ids.tolist() for s in run(15)[1]]
    b = [s.ids.tolist() for s in run(15)[1]]
    assert a == b
    tracker = OnlineTracker()
    assert len(tracker.update(0, Detections.empty()).ids) == 0
    assert tracker.update(1, Detections(BASE, np.ones(len(BASE)))).ids.tolist() == [0, 1, 2, 3, 4]


def test_bad_inputs():
    tracker = OnlineTracker()
    tracker.update(3, Detections(BASE, np.ones(len(BASE))))
    with pytest.raises(ValueError, match="time order"):
        tracker.update(3, Detections(BASE, np.ones(len(BASE))))
    with pytest.raises(ValueError, match="one value per detection"):
        tracker.update(4, Detections(BASE, np.ones(len(BASE))), intensity=np.ones(2))


@pytest.mark.parametrize("detect_every", [1, 4])
def test_live_tracker_on_blob_volumes_has_no_switches(detect_every):
    world = BlobWorld(BlobConfig(shape=(16, 96, 96), n_neurons=12, seed=3))
    live = LiveTracker(LiveTrackerConfig(voxel_um=world.config.voxel_um, detect_every=detect_every))
    scorer = TrackingScorer()
    for t in range(16):
        truth = world.truth(t * 0.1)
        scorer.add(
            truth.t_s, truth.ids, truth.positions_um, truth.activity, live.process(t, world.volume(t * 0.1))
        )
    score = scorer.score()
    assert score.detection.f1 > 0.95
    assert score.identity_switches == 0
    assert score.fraction_tracked_end_to_end == 1.0
