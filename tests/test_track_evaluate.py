"""Scoring: detection counts, switches, trace correlation; targettrack data; short runs; bench."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepz.lab.track_bench import run_track_bench
from track.evaluate import TrackingScorer, detection_score
from track.online import TrackState
from deepz.lab.track_eval import RunConfig, evaluate_run
from track.targettrack import evaluate_targettrack

TRUE = np.array([[0.0, 0.0, 0.0], [0.0, 10.0, 0.0]])
TARGETTRACK = Path(__file__).resolve().parents[2] / "shared" / "data" / "targettrack"


def state(t: int, ids, positions, dff) -> TrackState:
    empty = np.zeros(0, np.int64)
    return TrackState(
        t,
        np.asarray(ids),
        np.asarray(positions, float),
        np.ones(len(ids)),
        np.asarray(dff, float),
        empty,
        empty,
        np.zeros(3),
    )


def test_detection_score_counts():
    s = detection_score(np.array([[0.0, 0.0, 1.0], [0.0, 10.0, 2.0], [5.0, 5.0, 5.0]]), TRUE, 1.5)
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.f1 == pytest.approx(2 / 5)


def test_switch_coverage_and_trace_correlation():
    scorer = TrackingScorer()
    activity = np.sin(np.arange(20) / 3.0)
    for t in range(20):
        ids = [0, 1] if t < 10 else [0, 7]  # neuron 1 changes track id once
        scorer.add(
            t * 0.5,
            np.arange(2),
            TRUE,
            np.array([activity[t], activity[t]]),
            state(t, ids, TRUE, [2 * activity[t] + 1, activity[t]]),
        )
    score = scorer.score()
    assert score.identity_switches == 1
    assert score.fraction_tracked_end_to_end == 0.5
    assert score.switches_per_neuron_minute == pytest.approx(1 / (2 * 10.0 / 60))
    assert score.median_trace_r == pytest.approx(1.0)
    assert score.detection.f1 == 1.0


def test_scorer_needs_frames():
    with pytest.raises(ValueError, match="No frames"):
        TrackingScorer().score()


def test_short_blob_run_scores_perfectly():
    result = evaluate_run(
        RunConfig(seconds=1.0, rate_hz=8.0, planes=12, source="blobs", frame_shape=(96, 96))
    )
    assert result["score"]["detection"]["f1"] > 0.95
    assert result["score"]["identity_switches"] == 0


@pytest.mark.skipif(not TARGETTRACK.is_dir(), reason="targettrack data not present")
def test_targettrack_scores_are_reported():
    result = evaluate_targettrack(TARGETTRACK)
    assert result["n_pairs"] > 200
    assert 0 < result["detection"]["recall"] <= 1
    assert 0 < result["correspondence_accuracy_affine_aligned"] <= 1


def test_bench_reports_every_stage():
    result = run_track_bench(volumes=1, shape=(8, 64, 64), neurons=5, devices=["cpu"])
    rates = result["results"]["cpu"]["volumes_per_s"]
    assert set(rates) == {"detect", "refine_windowed", "activity_sphere", "link"}
    assert all(v > 0 for v in rates.values())


def test_neurons_out_of_view_are_left_out():
    scorer = TrackingScorer()
    for t in range(3):
        scorer.add(
            t, np.arange(2), TRUE, np.zeros(2), state(t, [0, 1], TRUE, [0.0, 0.0]), in_view=[True, t < 2]
        )
    score = scorer.score()
    assert score.n_neurons == 1
    assert (score.detection.tp, score.detection.fp, score.detection.fn) == (5, 0, 0)


def test_end_to_end_is_also_reported_over_resolvable_neurons():
    """Two neurons stacked 3 um apart in z are closer than wide-field resolution; the third stands alone."""
    truth = np.array([[0.0, 0.0, 0.0], [3.0, 0.5, 0.0], [0.0, 20.0, 0.0]])
    scorer = TrackingScorer()
    for t in range(10):  # the stacked pair merges into one detection that alternates between them
        seen = [0, 2] if t % 2 else [1, 2]
        scorer.add(t * 0.1, np.arange(3), truth, np.zeros(3), state(t, [5, 6], truth[seen], [0.0, 0.0]))
    score = scorer.score()
    assert score.fraction_tracked_end_to_end == pytest.approx(1 / 3)
    assert score.notes["neurons_with_unresolvable_neighbour"] == 2
    assert score.notes["fraction_tracked_end_to_end_resolvable"] == 1.0
