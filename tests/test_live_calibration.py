"""Calibrate, then read every neuron, end to end on the simulated microscope: `deepz calibrate` alone, and a
live run that starts with a focal scan and re-calibrates at an interval (the camera pauses, the pause and
the frames it cost are recorded, reference IDs carry over), its replay, and bad input through the CLI."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from typer.testing import CliRunner

from deepz.bench_pipeline import free_tcp_address
from deepz.cli import app
from deepz.commands.pipeline import _print_summary
from deepz.config import load_config
from deepz.runner import run_pipeline
from storage import RecordingReader
from storage.calibration import read_scans, scan_image_path
from track.readout.entering import REACH_PX, EntryConfig

RATE, SIZE = 40.0, 96
# calibrations in a process of their own (the GPU default; on a CPU a thread, which the other live tests use)
CALIBRATION = {"enabled": True, "z_range_um": [-6.0, 6.0], "step_um": 1.0, "interval_s": 2.5,
               "worker": "process"}


def _config(out: Path, **extra) -> object:
    return load_config(None, {
        "source": {"size": SIZE, "rate_hz": RATE, "neurons": 40, "seed": 3},
        "inference": {"planes": 4, "engine": "torch", "z_range_um": [-6.0, 6.0]},
        "recording": {"out": str(out), "overwrite": True},
        "publish": {"address": free_tcp_address(), "max_hz": 20},
        "calibration": CALIBRATION,
        "view": False,
        **extra,
    })


@pytest.fixture(scope="module")
def live_run(tmp_path_factory):
    """A 6 s live run at 40 Hz that scans at the start and re-scans every 2.5 s, calibrating in a process of
    its own beside the compute process's readout."""
    path = tmp_path_factory.mktemp("calibrated") / "live.zarr"
    return path, run_pipeline(_config(path, duration_s=6.0))


@pytest.fixture(scope="module")
def replayed(live_run, tmp_path_factory):
    """The live run replayed: every frame read, calibrating on each recorded scan before its frame."""
    out = tmp_path_factory.mktemp("replayed") / "replay.zarr"
    cfg = load_config(None, {"inference": {"planes": 4, "engine": "torch", "z_range_um": [-6.0, 6.0]},
                             "recording": {"out": str(out)}, "view": False})
    return out, run_pipeline(cfg, replay_from=live_run[0])


def test_live_run_scans_first_then_recalibrates_and_records_the_pauses(live_run) -> None:
    path, summary = live_run
    cal = summary["calibration"]
    scans = read_scans(path)
    assert len(scans) == cal["calibrations"] >= 2
    first, later = scans[0].record, [s.record for s in scans[1:]]
    assert (first.reason, first.frame_index, first.pause_s, first.frames_cost) == ("start", 0, 0.0, 0)
    assert first.z_um == pytest.approx(np.arange(-6.0, 6.5, 1.0).tolist())
    assert first.stage_um == pytest.approx(first.z_um) and first.focus_um == 0.0  # relative to focus 0
    for record in later:
        assert record.reason == "interval" and 0 < record.frame_index <= summary["frames"]
        assert record.pause_s > 0 and record.frames_cost == pytest.approx(record.pause_s * RATE, abs=1)
    assert cal["calibration_frames_cost"] == sum(r.frames_cost for r in later)
    assert cal["calibration_pause_s"] == pytest.approx(sum(r.pause_s for r in later), abs=1e-3)
    assert summary["frames_lost"] == 0  # the frames a pause cost are not lost frames
    stored = RecordingReader(path).attrs["summary"]["calibration"]
    assert stored["calibrations"] == cal["calibrations"]
    assert cal["calibrated_in"] == "a process of its own"  # and it calibrated every scan it was given


def test_reference_is_plausible_and_keeps_its_ids_across_recalibrations(live_run, replayed) -> None:
    from scipy.spatial import cKDTree

    from acquire.sim import WormSimulator
    from deepz.wiring import _sim_config

    path, _ = live_run
    scans = read_scans(replayed[0])  # replay calibrates on every scan; a live run may end before it did
    truth = WormSimulator(_sim_config(_config(path).source)).truth(0.0).positions_um
    field = SIZE * 0.325
    inside = (truth[:, 1] >= 0) & (truth[:, 1] < field) & (truth[:, 2] >= 0) & (truth[:, 2] < field)
    n_true = int((inside & (np.abs(truth[:, 0]) <= 6)).sum())
    n_found = len(scans[0].reference_ids)
    assert 0.7 * n_true <= n_found <= 1.3 * n_true, (n_found, n_true)
    camera_time = RecordingReader(path).metadata["camera_time_s"]
    simulator = WormSimulator(_sim_config(_config(path).source))
    identity: dict[int, int] = {}  # true neuron -> the ID its reference neuron had first
    kept = changed = 0
    for scan in scans:  # each reference neuron, matched to the true neuron it lies on when scanned
        assert scan.record.n_reference == len(scan.reference_ids) and "reference" not in scan.record.extra
        truth = simulator.truth(float(camera_time[scan.record.frame_index])).positions_um
        distance, nearest = cKDTree(truth).query(scan.reference_positions_um)
        close = distance < 1.5
        for neuron_id, true_neuron in zip(scan.reference_ids[close], nearest[close], strict=True):
            first = identity.setdefault(int(true_neuron), int(neuron_id))
            kept, changed = kept + (first == neuron_id), changed + (first != neuron_id)
    assert changed <= 0.1 * (kept + changed), (kept, changed)  # the same neurons keep their IDs
    assert kept > len(scans[0].reference_ids)  # and re-calibrations found them again


def test_every_frame_read_goes_to_the_tracks_and_traces(live_run, capsys) -> None:
    path, summary = live_run
    reader = RecordingReader(path)
    tracks = reader.tracks()
    scans = read_scans(path)
    for scan in scans:  # calibrated on live, or stored without a reference when the run ended first
        assert scan.record.n_reference == len(scan.reference_ids)
        assert scan.record.n_reference > 0 or "not computed" in scan.record.extra["reference"]
    assert scans[0].record.n_reference > 0 and summary["read_out_frames"] >= 1
    assert len(np.unique(tracks["t"])) == summary["read_out_frames"]
    not_read = summary["calibration"]["frames_not_read"]  # every frame is read or accounted for
    assert summary["read_out_frames"] + sum(not_read.values()) == summary["frames"]
    _print_summary(summary, None)  # the closing lines of `deepz live` say so
    said = (f"readout: no value for {not_read['fell_behind']} frames it fell behind on and "
            f"{not_read['before_calibration']} before the first calibration")
    printed = capsys.readouterr().out
    assert (said in printed) == any(not_read.values()) and "calibrated in a process of its own" in printed
    # a tracked ID in no scan's table is a neuron the readout added between scans (entering the field): first
    # read after the first frame, where the readout looks for them (near the field's edge)
    reference = set().union(*(s.reference_ids.tolist() for s in scans))
    edge_um = EntryConfig().band_um + REACH_PX * scans[0].record.pixel_size_um
    field_um = SIZE * scans[0].record.pixel_size_um
    for added in set(np.unique(tracks["id"]).tolist()) - reference:
        first = np.flatnonzero(tracks["id"] == added)[0]
        assert tracks["t"][first] > tracks["t"].min()
        y, x = tracks["y"][first], tracks["x"][first]
        assert min(y, x, field_um - y, field_um - x) <= edge_um
    ids, _, dff = reader.traces()
    assert set(ids.tolist()) == set(np.unique(tracks["id"]).tolist()) and np.isfinite(dff).any()


def test_scans_in_a_recording_validate_as_ngff_images(live_run) -> None:
    from ome_zarr_models.v05 import Image

    yaozarrs = pytest.importorskip("yaozarrs")
    path, _ = live_run
    for scan in read_scans(path):
        group = path / scan_image_path(zarr.open_group(path, mode="r"), scan.record.index)
        Image.from_zarr(zarr.open_group(group, mode="r"))
        yaozarrs.validate_zarr_store(str(group))


def test_replay_applies_the_recorded_scans_again(live_run, replayed) -> None:
    (path, live), (out, summary) = live_run, replayed
    assert summary["read_out_frames"] == summary["frames"] == live["frames"]  # replay reads every frame
    assert summary["calibration"]["frames_not_read"] == {"fell_behind": 0, "before_calibration": 0}
    original, again = read_scans(path), read_scans(out)
    assert [s.record.frame_index for s in again] == [s.record.frame_index for s in original]
    np.testing.assert_array_equal(again[0].stack, original[0].stack)
    assert len(np.unique(RecordingReader(out).tracks()["t"])) == live["frames"]


CALIBRATION_PROCESS = b"deepz.calibration_process import serve"  # in its command line


def _calibration_processes() -> set[int]:
    """PIDs of the calibration processes running on this machine (deepz.calibration_process)."""
    pids = set()
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if entry.name.isdigit() and CALIBRATION_PROCESS in (entry / "cmdline").read_bytes():
                pids.add(int(entry.name))
    return pids


def test_a_live_run_whose_calibration_process_dies_calibrates_on_in_the_readouts_process(tmp_path) -> None:
    """The calibration process killed (as for memory) a second into the run: the readout goes on, calibrating
    each scan in its own process, and the run says so."""
    before = _calibration_processes()
    killed: list[int] = []

    def kill_it() -> None:
        deadline = time.monotonic() + 60
        while not killed and time.monotonic() < deadline:
            if found := _calibration_processes() - before:
                time.sleep(1.0)
                pid = found.pop()
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            time.sleep(0.05)

    killer = threading.Thread(target=kill_it)
    killer.start()
    path = tmp_path / "live.zarr"
    summary = run_pipeline(_config(path, duration_s=6.0))
    killer.join()
    assert killed, "no calibration process was started"
    cal = summary["calibration"]
    assert cal["calibrated_in"] == "the readout's process (its own exited with code -9)"
    scans = read_scans(path)
    assert len(scans) >= 2 and scans[0].record.n_reference > 0  # the first scan, calibrated here after all
    assert summary["read_out_frames"] > 0 and summary["compute_error"] is None


def test_deepz_calibrate_stores_the_scan_and_its_reference(tmp_path) -> None:
    sim = tmp_path / "sim.toml"
    sim.write_text("seed = 3\n[camera]\nshape = [96, 96]\n[worm]\nn_neurons = 40\n")
    out = tmp_path / "cal.zarr"
    result = CliRunner().invoke(app, ["calibrate", "--sim-config", str(sim), "--out", str(out),
                                      "--z-range", "-6", "6", "--step", "1"])
    assert result.exit_code == 0, result.output
    assert "13 planes -6..+6 um around focus 0 um (restored to 0 um)" in result.output
    (scan,) = read_scans(out)
    assert f"found {len(scan.reference_ids)} reference neurons" in result.output
    assert scan.stack.shape == (13, 96, 96) and len(scan.reference_ids) >= 5
    assert np.all(np.abs(scan.reference_positions_um[:, 0]) <= 6.5)
    assert CliRunner().invoke(app, ["calibrate", "--sim-config", str(sim), "--out", str(out)]).exit_code == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--z-range", "-150", "0"], "outside the travel range"),
        (["--mm-config", "NOFOCUS"], "no focus device"),
    ],
)
def test_deepz_calibrate_bad_input_is_one_clear_error(tmp_path, args, message) -> None:
    rig = tmp_path / "camera-only.cfg"
    rig.write_text("#py pyDevice,Camera,acquire.sim.devices,SimCamera\n#py Property,Core,Initialize,1\n"
                   "#py Property,Core,Camera,Camera\n")
    out = tmp_path / "cal.zarr"
    args = [str(rig) if a == "NOFOCUS" else a for a in args]
    result = CliRunner().invoke(app, ["calibrate", "--out", str(out), *args])
    last = result.output.strip().splitlines()[-1]  # (above it: pymmcore-plus logs that no MM install exists)
    assert result.exit_code == 2 and last.startswith("error: ") and message in last, result.output
    assert not out.exists()


def test_live_with_a_scan_beyond_the_stage_limits_fails_before_recording(tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[calibration]\nenabled = true\nz_range_um = [-150.0, 0.0]\n")
    out = tmp_path / "live.zarr"
    result = CliRunner().invoke(app, ["live", "--config", str(config), "--size", "64", "--no-view",
                                      "--duration", "1", "--out", str(out), "--publish", free_tcp_address()])
    assert result.exit_code == 2 and "outside the travel range" in result.output, result.output
    assert not out.exists()


def test_the_recording_viewer_shows_the_readout_and_the_calibrations(live_run) -> None:
    from display.recording import RecordingAdapter
    from display.status import format_status

    path, summary = live_run
    adapter = RecordingAdapter(RecordingReader(path))
    scans = read_scans(path)
    tracks = RecordingReader(path).tracks()
    t = int(tracks["t"].max())
    state = adapter.state(t)
    rows = tracks["t"] == t
    np.testing.assert_array_equal(state.track_ids, tracks["id"][rows])
    np.testing.assert_array_equal(state.track_dff, tracks["dff"][rows])
    done = [s.record for s in scans if s.record.frame_index <= t]
    used = [r for r in done if r.n_reference]  # a frame was read, so a calibration was in use
    assert state.stats["calibrations"] == len(done)
    assert state.stats["reference_neurons"] == used[-1].n_reference
    assert f"({len(done)} scans, {used[-1].n_reference} neurons" in format_status(state, "recording")
