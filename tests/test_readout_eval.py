"""deepz evaluate-activity and deepz bench activity on tiny runs: the JSON they promise, and user errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from deepz.cli import app

KEYS = {
    "traced_fraction", "median_r", "fraction_r_ge_0_9", "position_error_median_um",
    "switches_per_neuron_minute",
}


def test_evaluate_activity_writes_every_method_with_the_required_scores(tmp_path):
    out = tmp_path / "activity.json"
    result = CliRunner().invoke(app, [
        "evaluate-activity", "--seed", "1", "--seconds", "0.35", "--size", "64", "--virtual-every", "20",
        "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert data["complete"] is True
    assert set(data["methods"]) == {"demix", "virtual-sample", "virtual-detect", "zscan"}
    assert data["default"] == "demix"
    for scores in data["methods"].values():
        assert KEYS <= set(scores)
    demix = data["methods"]["demix"]
    assert demix["n_times"] == [35] and demix["n_neurons_scored"] > 0
    assert data["methods"]["zscan"]["n_times"] == [1]  # 35 frames hold one 32-plane volume
    assert data["runs"]["seed 1"]["info"]["deep_z"]["every_frames"] == 20


def test_evaluate_activity_on_targettrack_without_data_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("DEEPZ_TARGETTRACK", raising=False)
    args = ["evaluate-activity", "--targettrack", "--json", str(tmp_path / "x.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "targettrack" in result.output and not (tmp_path / "x.json").exists()


def test_bench_activity_writes_frame_rates(tmp_path):
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "activity", "--json", str(out), "--size", "64", "--neurons", "12", "--frames", "4",
        "--device", "cpu",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    cpu = data["results"]["cpu"]
    assert cpu["frames_per_s_median"] > 0 and cpu["neurons_in_reference"] > 0
    assert data["frame_shape"] == [64, 64] and data["frames_timed"] == 3
    # a frame makes a few hundred torch calls, few of them waiting for the device; a calibration thousands
    assert 50 < cpu["torch_calls_per_frame"] < 2000 and 0 < cpu["torch_waits_per_frame"] < 10
    assert cpu["torch_calls_per_calibration"] > 10 * cpu["torch_calls_per_frame"]
    # frames read while a copy re-calibrated beside the readout, in a thread and in a process of its own
    for beside in (cpu["while_recalibrating"][worker] for worker in ("thread", "process")):
        assert beside["frames_read"] >= 1 and beside["recalibration_s"] > 0
        assert beside["frames_per_s"] == pytest.approx(beside["frames_read"] / beside["seconds"])


def test_a_neuron_that_leaves_the_field_is_scored_over_the_times_it_is_in_it():
    from acquire.sim.sample import GroundTruth
    from deepz.lab.activity_score import ActivityScorer, summarise

    scorer = ActivityScorer((50.0, 50.0))
    for k in range(100):
        t = k * 0.1
        x = np.array([20.0, 20.0 + 0.5 * k, 82.0 - 0.5 * k])  # B leaves at k = 58, C enters at k = 67
        positions = np.column_stack([np.zeros(3), np.full(3, 25.0), x])
        activity = np.sin(np.array([1.0, 2.0, 3.0]) * t) + 1
        truth = GroundTruth(t, np.arange(3), positions, activity, activity)
        shown = x < 48.5  # the method reports a neuron only while it is in the field
        scorer.add("m", truth, np.arange(3)[shown], positions[shown], activity[shown])
    scores = summarise([scorer.neuron_scores("m")])
    assert scores["n_neurons_scored"] == 2  # C is in range for less than half of the run
    assert scores["traced_fraction"] == 1.0 and scores["median_r"] > 0.999
    assert scores["switches_per_neuron_minute"] == 0.0


def test_the_evaluation_rescans_as_deepz_live_does_and_scores_the_frames_with_a_readout():
    from deepz.lab.activity_eval import ActivityRunConfig, evaluate_activity
    from deepz.lab.activity_run import simulated_worm

    cfg = ActivityRunConfig(
        seconds=0.6, virtual_every=0, recalibrate_s=0.2, scan_range_um=(-8.0, 8.0), scan_step_um=1.0
    )  # 17-plane scans: a cheap calibration
    scores, info = evaluate_activity(simulated_worm(1, 64), cfg, methods=("demix",))
    cal = info["calibration"]
    assert [s["reason"] for s in cal["scans"]] == ["start", "interval"]
    assert cal["scans"][1]["frame_index"] == 20  # 0.2 s of frames after the first scan, then 17 planes
    assert cal["frames_cost"] == 17 and cal["readout_frames"] + 17 == cfg.n_frames
    assert scores["demix"].n_times == cal["readout_frames"]  # the scan's frames have no readout
    assert cal["scans"][1]["n_reference"] > 0
    assert scores["demix"].switches == 0  # the re-scan's neurons kept their IDs
    assert float(np.mean(scores["demix"].coverage)) > 0.9


def test_the_oracle_bound_is_written_beside_the_methods_and_scored_like_them(tmp_path):
    out = tmp_path / "activity.json"
    result = CliRunner().invoke(app, [
        "evaluate-activity", "--seed", "1", "--seconds", "0.5", "--size", "64", "--virtual-every", "0",
        "--method", "demix", "--oracle-bound", "5", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    bound = data["oracle_bound"]
    assert set(data["methods"]) == {"demix"} and KEYS <= set(bound)
    assert bound["every_frames"] == 5 and bound["n_times"] == [10]
    assert data["runs"]["seed 1"]["oracle_bound"]["n_times"] == [10]
    assert bound["traced_fraction"] == 1.0 and bound["position_error_median_um"] == 0.0
    assert bound["switches_per_neuron_minute"] == 0.0 and bound["lateral_error_um"] == 0.0
    result = CliRunner().invoke(app, [
        "evaluate-activity", "--seed", "1", "--seconds", "0.5", "--size", "64", "--virtual-every", "0",
        "--method", "demix", "--oracle-bound", "5", "--oracle-position-error", "0.3", "--json", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    bound = json.loads(out.read_text())["oracle_bound"]
    assert bound["lateral_error_um"] == 0.3 and bound["position_error_median_um"] > 0.1


def test_the_oracle_bound_reads_the_activity_of_a_simulated_worm_to_photon_noise():
    """Every neuron demixed with the simulator's own stamps at its true place: over 3 s (30 frames) the
    traces follow the true activity."""
    from deepz.lab.activity_bound import oracle_bound
    from deepz.lab.activity_eval import ActivityRunConfig
    from deepz.lab.activity_run import simulated_worm
    from deepz.lab.activity_score import summarise

    scores = summarise([oracle_bound(simulated_worm(11, 256), ActivityRunConfig(seconds=3.0), every=10)])
    assert scores["n_neurons_scored"] > 100 and scores["n_times"] == [30]
    assert scores["median_r"] > 0.95, scores


def test_the_oracle_bound_with_a_position_error_shows_how_precisely_neurons_must_be_followed():
    """The same stamps placed 0.2 um (median) off the true positions, a fresh error at every re-scan: the
    positions the bound reports are off by that much, and its traces lose correlation (defocused neurons'
    overlapping stamps trade light), while an exact placement is unchanged by the option."""
    from deepz.lab.activity_bound import oracle_bound
    from deepz.lab.activity_eval import ActivityRunConfig
    from deepz.lab.activity_run import simulated_worm
    from deepz.lab.activity_score import summarise

    cfg = ActivityRunConfig(seconds=3.0, recalibrate_s=1.0)
    exact = summarise([oracle_bound(simulated_worm(11, 256), cfg, every=10, lateral_error_um=0.0)])
    off = summarise([oracle_bound(simulated_worm(11, 256), cfg, every=10, lateral_error_um=0.2)])
    assert exact["position_error_median_um"] == 0.0
    assert 0.17 < off["position_error_median_um"] < 0.23, off
    assert off["median_r"] < exact["median_r"] - 0.01, (off, exact)
    with pytest.raises(ValueError, match="lateral_error_um"):
        oracle_bound(simulated_worm(11, 256), cfg, lateral_error_um=-1.0)
