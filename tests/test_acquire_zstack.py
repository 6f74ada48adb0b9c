"""Focal-stack acquisition through the focus stage, the stack file format, and the acquisition CLI."""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from acquire.errors import AcquisitionError
from acquire.sim import CameraConfig, SimConfig
from acquire.sim.devices import load_simulated_core
from acquire.zstack import acquire_focal_stack, scan_sequence, z_positions
from storage.stack_file import load_stack, save_stack

CONFIG = SimConfig(camera=CameraConfig(shape=(192, 192)), seed=1)


@pytest.fixture(scope="module")
def core():
    core = load_simulated_core(CONFIG)
    yield core
    core.unloadAllDevices()


@pytest.fixture
def ctrl_c():
    """Ctrl-C raises KeyboardInterrupt here, also where this process was started with SIGINT ignored (a
    background job); the handler before is put back."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_stack_is_sharpest_where_the_neurons_are(core) -> None:
    z = z_positions(-8, 8, 0.5)
    core.setPosition(0.0)
    scan = acquire_focal_stack(core, z)
    stack = scan.stack
    assert stack.shape == (len(z), 192, 192) and stack.dtype == np.uint16
    np.testing.assert_array_equal(scan.z_um, z)
    assert core.getPosition() == 0.0  # focus restored
    # planes through the worm (|z| <~ 6 um) show contrasted nuclei; far defocus is blurred flat
    binned = stack.astype(np.float64).reshape(len(z), 48, 4, 48, 4).mean(axis=(2, 4))
    contrast = binned.std(axis=(1, 2))
    assert contrast[np.abs(z) <= 4].max() > 1.3 * contrast[[0, -1]].max()


def test_offsets_are_relative_to_the_current_focus(core) -> None:
    """A rig focused deep (here 2000 um) scans around that focus, never at absolute -10..10 um."""
    core.setProperty("Z", "UpperLimit-um", 2500.0)
    try:
        core.setPosition(2000.0)
        scan = acquire_focal_stack(core, z_positions(-10, 10, 5))
        np.testing.assert_allclose(scan.stage_um, [1990, 1995, 2000, 2005, 2010])
        assert scan.focus_um == 2000.0 and core.getPosition() == 2000.0
    finally:
        core.setPosition(0.0)
        core.setProperty("Z", "UpperLimit-um", 100.0)


def test_out_of_range_positions_are_refused_before_moving(core) -> None:
    core.setPosition(90.0)
    with pytest.raises(AcquisitionError, match=r"outside the travel range \[-100, 100\]"):
        acquire_focal_stack(core, [0.0, 15.0])  # 105 um
    assert core.getPosition() == 90.0
    with pytest.raises(AcquisitionError, match="more than 200 um from the current focus"):
        acquire_focal_stack(core, [-250.0, 0.0])
    assert core.getPosition() == 90.0
    core.setPosition(0.0)
    with pytest.raises(AcquisitionError, match="positive step"):
        z_positions(1, 0, 0.5)


def test_focus_is_restored_after_ctrl_c_mid_scan(core, ctrl_c) -> None:
    """A real SIGINT to this process while the stage steps: the KeyboardInterrupt still restores focus."""
    core.setPosition(3.0)
    timer = threading.Timer(0.4, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            acquire_focal_stack(core, z_positions(-10, 10, 0.5), settle_ms=100)  # ~4 s: interrupted
    finally:
        timer.cancel()
    assert core.getPosition() == 3.0
    core.setPosition(0.0)


@pytest.mark.parametrize("suffix", [".zarr", ".tif"])
def test_stack_files_round_trip(tmp_path: Path, suffix: str) -> None:
    stack = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    z = np.array([-1.0, 0.0, 1.0])
    path = save_stack(tmp_path / f"s{suffix}", stack, z, pixel_size_um=0.325, attrs={"source": "test"})
    got, got_z, attrs = load_stack(path)
    np.testing.assert_array_equal(got, stack)
    np.testing.assert_array_equal(got_z, z)
    assert attrs["pixel_size_um"] == 0.325 and attrs["source"] == "test"


def test_stack_files_carry_their_physical_scale_for_standard_tools(tmp_path: Path) -> None:
    import tifffile
    from ome_zarr_models.v05 import Image

    stack = np.arange(3 * 8 * 8, dtype=np.uint16).reshape(3, 8, 8)
    z = np.array([-0.5, 0.0, 0.5])
    save_stack(tmp_path / "s.ome.tif", stack, z, pixel_size_um=0.325)
    with tifffile.TiffFile(tmp_path / "s.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        pixels = tif.ome_metadata
    assert 'PhysicalSizeX="0.325"' in pixels and 'PhysicalSizeZ="0.5"' in pixels and 'PositionZ="-0.5"' in pixels
    import zarr

    save_stack(tmp_path / "s.zarr", stack, z, pixel_size_um=0.325)
    image = Image.from_zarr(zarr.open_group(tmp_path / "s.zarr", mode="r"))
    scale = image.attributes.ome.multiscales[0].datasets[0].coordinateTransformations[0].scale
    assert list(scale) == [0.5, 0.325, 0.325]


def test_cli_acquire_stack_bench_and_simulate(tmp_path: Path) -> None:
    from deepz.cli import app

    toml = tmp_path / "sim.toml"
    toml.write_text("[camera]\nshape = [96, 96]\n")
    runner = CliRunner()
    out = tmp_path / "stack.zarr"
    res = runner.invoke(app, ["acquire-stack", "--z-range", "-1", "1", "--step", "0.5", "--out", str(out),
                              "--sim-config", str(toml)])  # fmt: skip
    assert res.exit_code == 0, res.output
    stack, z, attrs = load_stack(out)
    assert stack.shape == (5, 96, 96) and z.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert attrs["pixel_size_um"] == pytest.approx(0.325)
    assert attrs["focus_um"] == 0.0 and attrs["stage_um"] == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert attrs["z_sequenced"] is True  # the simulated piezo takes the scan as a hardware sequence
    res = runner.invoke(app, ["acquire-stack", "--z-range", "-1", "1", "--out", str(out), "--sim-config", str(toml)])
    assert res.exit_code == 2 and "already exists" in res.output  # never replaced without --overwrite
    res = runner.invoke(app, ["acquire-stack", "--z-range", "-1", "1", "--out", str(out), "--sim-config", str(toml),
                              "--binning", "2", "--roi", "0", "8", "40", "24", "--stepped", "--overwrite"])  # fmt: skip
    assert res.exit_code == 0, res.output
    stack, z, attrs = load_stack(out)
    assert stack.shape == (5, 24, 40) and attrs["pixel_size_um"] == pytest.approx(0.65)
    assert attrs["z_sequenced"] is False
    res = runner.invoke(app, ["acquire-stack", "--out", str(tmp_path / "b.zarr"), "--sim-config", str(toml),
                              "--binning", "3"])  # fmt: skip
    assert res.exit_code == 2 and "cannot bin 3x3; its binnings are 1, 2, 4" in res.output

    js = tmp_path / "bench.json"
    res = runner.invoke(app, ["bench", "acquire", "--size", "64", "--rate", "50", "--seconds", "1",
                              "--json", str(js)])  # fmt: skip
    assert res.exit_code == 0, res.output
    result = json.loads(js.read_text())
    run = result["run"]
    assert run["frames_acquired"] > 0 and run["frames_lost"] == 0 and run["size"] == [64, 64]
    assert result["render"]["cpu_ms_mean"] > 0 and "shared" in result["machine"]["note"]

    movie = tmp_path / "movie.zarr"
    res = runner.invoke(app, ["simulate", "frames", "--seconds", "0.05", "--rate", "100", "--out", str(movie),
                              "--sim-config", str(toml)])  # fmt: skip
    assert res.exit_code == 0, res.output
    import zarr

    root = zarr.open_group(movie, mode="r")
    assert root["frames"].shape == (5, 96, 96) and root["truth/positions_um"].shape == (5, 180, 3)


def test_useq_mda_z_plan_runs_on_the_simulated_core(core) -> None:
    import useq

    seen = []
    core.mda.events.frameReady.connect(lambda img, event, meta: seen.append((img.shape, event.z_pos)))
    core.mda.run(useq.MDASequence(z_plan={"top": 1.0, "bottom": -1.0, "step": 1.0}))
    assert [z for _, z in seen] == [-1.0, 0.0, 1.0] and seen[0][0] == (192, 192)
    assert not core.getShutterOpen()  # AutoShutter closed the simulated shutter again


def _contrast(stack: np.ndarray) -> np.ndarray:
    n, h, w = stack.shape
    return stack.astype(np.float64).reshape(n, h // 4, 4, w // 4, 4).mean(axis=(2, 4)).std(axis=(1, 2))


def test_hardware_sequenced_and_stepped_scans_take_the_same_planes(core) -> None:
    """The simulated piezo takes the scan's useq sequence and steps on the camera's exposures; a stepped scan
    of the same offsets (software, positions read back) sees the same focal planes."""
    z = z_positions(-8, 8, 2)
    core.setPosition(1.0)
    sequence = scan_sequence(1.0, z)
    assert sequence.z_plan.is_relative and [e.z_pos for e in sequence.iter_events()] == list(1.0 + z)
    moves: list[float] = []
    record = lambda label, position: moves.append(position)  # noqa: E731
    core.events.stagePositionChanged.connect(record)
    try:
        hardware = acquire_focal_stack(core, z)
    finally:
        core.events.stagePositionChanged.disconnect(record)
    assert hardware.sequenced and core.isStageSequenceable("Z") and not core.isSequenceRunning()
    np.testing.assert_allclose(moves[: z.size], 1.0 + z)  # each exposure at its plane, in order
    assert moves[-1] == 1.0 and core.getPosition() == 1.0  # focus restored
    np.testing.assert_allclose(hardware.stage_um, 1.0 + z)
    stepped = acquire_focal_stack(core, z, sequenced=False)
    assert not stepped.sequenced and core.getPosition() == 1.0
    np.testing.assert_allclose(stepped.stage_um, 1.0 + z)
    assert np.corrcoef(_contrast(hardware.stack), _contrast(stepped.stack))[0, 1] > 0.95
    core.setPosition(0.0)


def test_stages_that_cannot_sequence_are_stepped(core) -> None:
    z = z_positions(-2, 2, 1)
    assert acquire_focal_stack(core, z, settle_ms=1).sequenced is False  # a settle time asks for steps
    core.setProperty("Z", "SequenceMaxLength", 3)  # shorter than the scan
    try:
        assert acquire_focal_stack(core, z).sequenced is False
        with pytest.raises(AcquisitionError, match="cannot run a hardware sequence of 5 positions"):
            acquire_focal_stack(core, z, sequenced=True)
        assert core.getPosition() == 0.0
    finally:
        core.setProperty("Z", "SequenceMaxLength", 1000)


def test_focus_is_restored_after_ctrl_c_mid_sequenced_scan(core, ctrl_c) -> None:
    core.setPosition(-2.0)
    core.setExposure(100.0)  # 41 planes take 4 s: interrupted
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            acquire_focal_stack(core, z_positions(-10, 10, 0.5))
    finally:
        timer.cancel()
        core.setExposure(10.0)
    assert core.getPosition() == -2.0 and not core.isSequenceRunning()
    core.setPosition(0.0)
