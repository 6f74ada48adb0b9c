"""The compute process of a live run: its volumes match their frames by sequence number, and a stage that
raises or stalls there never stops raw recording; its error reaches the user, the summary and the store."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import typer
from compute_faults import build_raising, build_slow_calibration, build_slow_recalibration, build_stalling

from acquire.array_source import ArraySource
from deepz import wiring
from deepz.commands.pipeline import _print_summary
from deepz.calibration import calibrating_source
from deepz.compute_process import FRAME_SLOTS, ComputeProcess, ComputeSpec, build_stages, frame_slots
from deepz.config import load_config
from deepz.optics_check import CameraOptics
from deepz.pipeline import Pipeline, PipelineStages, RunMode
from deepz.runner import _close_recorder
from storage import RecordingReader

SIZE, PLANES, RATE, PX = 64, 4, 100.0, 0.325


def _config(out):
    return load_config(None, {
        "source": {"size": SIZE, "rate_hz": RATE},
        "inference": {"planes": PLANES, "engine": "torch", "z_range_um": [-6.0, 6.0], "device": "cpu"},
        "recording": {"out": str(out), "overwrite": True},
        "calibration": {"enabled": False},
        "view": False,
    })


def _frames(n: int) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.poisson(200, (n, SIZE, SIZE)).astype(np.uint16) + rng.integers(0, 2000, (n, 1, 1), np.uint16)


def _live_run(out, frames: np.ndarray, build=build_stages, stop_timeout_s: float = 10.0) -> dict:
    """A live pipeline on frames paced at RATE, with its compute process and recording."""
    cfg = _config(out)
    model, planes, _ = wiring.load_checked_model(cfg.inference, (SIZE, SIZE), PX)
    voxel = (float(planes[1] - planes[0]), PX, PX)
    spec = ComputeSpec(cfg, (SIZE, SIZE), PX, CameraOptics(PX), voxel, tuple(planes), 0.01)
    compute = ComputeProcess(spec, build=build, stop_timeout_s=stop_timeout_s)
    try:
        compute.start()
        recorder = wiring.build_recorder(cfg.recording, frame_shape=(SIZE, SIZE), pixel_size_um=PX, planes_um=planes,
                                         frame_interval_s=1 / RATE, run_config=cfg, model=model)
        pipeline = Pipeline(ArraySource(frames, rate_hz=RATE, pixel_size_um=PX),
                            PipelineStages(compute=compute, recorder=recorder), RunMode(live=True))
        summary = pipeline.run()
        _close_recorder(recorder, summary)
    finally:
        compute.close()
    return summary


def test_volumes_and_tracks_match_their_frames_by_sequence_number(tmp_path):
    frames = _frames(120)
    summary = _live_run(tmp_path / "rec.zarr", frames)
    reader = RecordingReader(tmp_path / "rec.zarr")
    assert summary["compute"] == "process" and summary["compute_error"] is None
    assert reader.n_frames == summary["frames"] == len(frames) and summary["frames_lost"] == 0
    np.testing.assert_array_equal(reader.frames[:], frames)
    assert summary["volumes"] >= 2 and reader.volume_indices.size == summary["volumes"] - summary["volumes_not_stored"]
    skipped = reader.metadata["volume_skipped"]
    assert int(skipped.sum()) == summary["volumes_skipped"] == len(frames) - summary["volumes"]
    assert not skipped[reader.volume_indices].any()
    cfg = _config(tmp_path / "unused.zarr")
    engine, _, _ = wiring.build_engine(cfg.inference, (SIZE, SIZE), PX)
    for t in reader.volume_indices[:: max(1, reader.volume_indices.size // 5)]:  # a volume is its own frame's
        expected = engine.run(frames[int(t)][np.newaxis])[0].astype(np.int32)
        assert np.abs(reader.volume(int(t)).astype(np.int32) - expected).max() <= 1, t
    # tracks belong to frames that became volumes; on a loaded machine one of those can be computed and
    # tracked yet not stored (displaced from the volume ring: counted in volumes_not_stored)
    assert set(np.unique(reader.tracks()["t"])) <= set(np.flatnonzero(~skipped).tolist())
    assert summary["tracked_volumes"] >= 1


@pytest.mark.parametrize(("build", "message"), [(build_raising, "injected engine fault"), (build_stalling, "stalled")])
def test_a_failing_or_stalled_stage_never_stops_raw_recording(tmp_path, caplog, capsys, build, message):
    frames = _frames(150)
    with caplog.at_level(logging.ERROR, logger="deepz.pipeline"):
        summary = _live_run(tmp_path / "rec.zarr", frames, build=build, stop_timeout_s=1.5)
    reader = RecordingReader(tmp_path / "rec.zarr")
    assert reader.complete and reader.n_frames == summary["frames"] == len(frames) and summary["frames_lost"] == 0
    np.testing.assert_array_equal(reader.frames[:], frames)
    assert message in summary["compute_error"]
    assert message in reader.attrs["summary"]["compute_error"]
    assert any(message in r.getMessage() for r in caplog.records)
    assert 1 <= summary["volumes"] <= 4  # the frames before the fault became volumes; nothing after
    skipped = reader.metadata["volume_skipped"]
    assert int(skipped.sum()) == summary["volumes_skipped"] >= len(frames) - 5
    with pytest.raises(typer.Exit) as ended:  # the closing lines of `deepz live`
        _print_summary(summary, tmp_path / "rec.zarr")
    assert ended.value.exit_code == 1
    err = capsys.readouterr().err
    assert "inference/tracking stopped early" in err and message in err and "raw frames were recorded" in err


@pytest.mark.parametrize(
    ("build", "interval_s", "calibrations"),
    [(build_slow_calibration, 0.0, 1), (build_slow_recalibration, 0.5, 2)],
    ids=["first-calibration", "re-calibration"],
)
def test_a_run_that_ends_during_a_calibration_waits_for_it_and_reads_every_frame(
    tmp_path, caplog, build, interval_s, calibrations
):
    """A live run on the simulated microscope stopped while its readout still calibrates, for longer than the
    stop wait (slowly, as on a 2-core CPU): on the first scan (the frames kept meanwhile are then read) or
    on a re-scan (waited for a while, then stored without its reference). Either way not a stall. The first
    scan reaches the process after the frames that follow it, and those frames still wait for it."""
    cfg = load_config(None, {
        "source": {"size": SIZE, "rate_hz": 40.0, "neurons": 20, "seed": 3},
        "inference": {"planes": PLANES, "engine": "torch", "z_range_um": [-6.0, 6.0], "device": "cpu"},
        "calibration": {"enabled": True, "z_range_um": [-6.0, 6.0], "step_um": 1.0, "interval_s": interval_s},
        "view": False,
    })
    camera = wiring.build_source(cfg.source)
    model, planes, _ = wiring.load_checked_model(cfg.inference, camera.frame_shape, camera.pixel_size_um)
    px = camera.pixel_size_um
    voxel = (float(planes[1] - planes[0]), px, px)
    spec = ComputeSpec(cfg, camera.frame_shape, px, CameraOptics(px), voxel, tuple(planes), 1 / 40.0)
    compute = ComputeProcess(spec, build=build, stop_timeout_s=1.5)
    source = calibrating_source(camera, cfg.calibration, model.manifest, compute)
    try:
        compute.start()
        pipeline = Pipeline(source, PipelineStages(compute=compute), RunMode(live=True, live_source=True,
                                                                             duration_s=1.5))
        source.start()
        with caplog.at_level(logging.INFO, logger="deepz.pipeline"):
            summary = pipeline.run()
    finally:
        source.stop()
        compute.close()
    assert summary["compute_error"] is None
    assert any("finishing its calibration" in r.getMessage() for r in caplog.records)
    calibration = pipeline.compute_done["readout_summary"]
    assert calibration["calibrations"] >= calibrations and calibration["scans"][0]["n_reference"] >= 1
    if calibrations == 1:  # the frames kept during the first calibration are read
        assert calibration["frames_not_read"] == {"fell_behind": 0, "before_calibration": 0}
        assert summary["read_out_frames"] == summary["frames"] > 0


def test_the_frame_ring_holds_two_seconds_where_shared_memory_has_room(tmp_path):
    cfg = _config(tmp_path / "unused.zarr")
    spec = ComputeSpec(cfg, (SIZE, SIZE), PX, CameraOptics(PX), (3.0, PX, PX), (-6.0, -2.0, 2.0, 6.0), 0.01)
    assert frame_slots(spec, shm=str(tmp_path)) == round(2 * RATE)
    huge = ComputeSpec(cfg, (1 << 15, 1 << 15), PX, CameraOptics(PX), (3.0, PX, PX), tuple(range(64)), 0.01)
    assert frame_slots(huge, shm=str(tmp_path)) == FRAME_SLOTS  # 2 GB frames: the fewest


def test_a_process_that_could_not_start_closes_cleanly(tmp_path):
    cfg = _config(tmp_path / "unused.zarr")
    spec = ComputeSpec(cfg, (SIZE, SIZE), PX, CameraOptics(PX), (3.0, PX, PX), (-6.0, -2.0, 2.0, 6.0), 0.01)
    compute = ComputeProcess(spec, build=lambda spec: None)  # a lambda cannot reach a spawned process
    with pytest.raises(Exception, match="pickle") as raised:
        compute.start()
    assert not isinstance(raised.value, AssertionError)
    compute.close()  # the start's own error is what the user sees, not one from closing
