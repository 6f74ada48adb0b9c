"""Rig controls on the simulated microscope (a real pymmcore-plus camera device): binning, ROI, exposure and
circular buffer, checked against what the camera allows, in the source, the run config and `deepz live`."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from acquire.errors import AcquisitionError
from acquire.mm import MicroManagerSource
from acquire.sim import CameraConfig, SimConfig, WormSimulator
from acquire.sim.devices import load_simulated_core
from deepz.bench_pipeline import free_tcp_address
from deepz.cli import app

CONFIG = SimConfig(camera=CameraConfig(shape=(64, 64)), seed=4)


@pytest.fixture()
def core():
    core = load_simulated_core(CONFIG)
    yield core
    core.unloadAllDevices()


def test_binned_roi_frames_are_the_sensor_summed_and_cropped(core) -> None:
    source = MicroManagerSource(core, rate_hz=50.0, binning=2, roi=(4, 6, 20, 12), buffer_mb=16)
    assert source.frame_shape == (12, 20) and source.pixel_size_um == pytest.approx(0.65)
    assert str(core.getProperty("Camera", "Binning")) == "2" and list(core.getROI()) == [4, 6, 20, 12]
    frames = []
    with source:
        for image, meta in source.frames():
            frames.append((image, meta))
            if len(frames) == 3:
                break
    assert core.getCircularBufferMemoryFootprint() == 16
    sim = WormSimulator(CONFIG)
    for image, meta in frames:
        full = sim.render(meta.camera_time_s, meta.focus_z_um, exposure_ms=meta.exposure_ms).astype(np.uint32)
        binned = np.minimum(full.reshape(32, 2, 32, 2).sum(axis=(1, 3)), 65535)
        np.testing.assert_array_equal(image, binned[6:18, 4:24])


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"binning": 3}, r"cannot bin 3x3; its binnings are 1, 2, 4"),
        ({"binning": 2, "roi": (0, 0, 64, 64)}, r"does not fit camera 'Camera''s 32x32 sensor"),
        ({"roi": (60, 0, 8, 8)}, r"x \+ width <= 64"),
        ({"exposure_ms": 90_000.0}, r"outside camera 'Camera''s range \[0.001, 60000\] ms"),
        ({"buffer_mb": 1 << 30}, r"more than the \d+ MB of free memory"),
    ],
)
def test_settings_the_camera_does_not_allow_are_one_line_errors(core, settings, match) -> None:
    with pytest.raises(AcquisitionError, match=match) as info:
        MicroManagerSource(core, rate_hz=50.0, **settings)
    assert "\n" not in str(info.value)


def test_a_buffer_smaller_than_two_frames_is_refused() -> None:
    core = load_simulated_core(SimConfig(camera=CameraConfig(shape=(1024, 1024))))  # 2 MB frames
    try:
        MicroManagerSource(core, buffer_mb=4)  # two frames fit
        with pytest.raises(AcquisitionError, match=r"1 MB circular buffer holds fewer than 2 frames of 2.00 MB"):
            MicroManagerSource(core, buffer_mb=1)
    finally:
        core.unloadAllDevices()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--binning", "3"], "cannot bin 3x3; its binnings are 1, 2, 4"),
        (["--roi", "60", "0", "8", "8"], "need x + width <= 64"),
        (["--exposure", "90000", "--rate", "0.01"], "outside camera 'Camera''s range [0.001, 60000] ms"),
        (["--buffer-mb", str(1 << 30)], "MB of free memory"),
        (["--roi", "0", "0", "0", "8"], "roi must be X Y WIDTH HEIGHT"),
    ],
)
def test_live_camera_flags_reach_the_camera_checks(flags, message) -> None:
    """Each flag gets to the camera (or the config check) before any model or store: exit 2, one line.
    (A live run with an ROI, exposure and buffer: tests/test_packaging.py.)"""
    res = CliRunner().invoke(app, ["live", "--size", "64", "--no-view", "--publish", free_tcp_address(), *flags])
    assert res.exit_code == 2 and message in res.output and res.output.count("\n") == 1, res.output
