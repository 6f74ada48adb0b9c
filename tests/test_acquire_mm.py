"""Sequence acquisition through pymmcore-plus UniMMCore with the simulated devices (acquire.mm)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from acquire.errors import AcquisitionError
from deepz.protocols import FrameSource
from acquire.mm import MicroManagerSource
from acquire.sim import CameraConfig, SimConfig, WormSimulator
from acquire.sim.devices import load_simulated_core

CONFIG = SimConfig(camera=CameraConfig(shape=(128, 128)), seed=4)


@pytest.fixture()
def core():
    core = load_simulated_core(CONFIG)
    yield core
    if core.isSequenceRunning():
        core.stopSequenceAcquisition()
    core.unloadAllDevices()


def test_sequence_frames_match_the_simulator_at_their_time_and_focus(core) -> None:
    sim = WormSimulator(CONFIG)
    source = MicroManagerSource(core, rate_hz=200)
    assert isinstance(source, FrameSource)
    got = []
    with source:
        for frame, meta in source.frames():
            got.append((frame.copy(), meta))
            if meta.index == 20:
                core.setPosition(2.5)
            if meta.focus_z_um == 2.5 or meta.index >= 1000:  # frames already queued show the old focus
                break
        stats = source.stats
    assert not core.isSequenceRunning()
    assert source.frame_shape == (128, 128) and source.pixel_size_um == pytest.approx(0.325)
    numbers = [m.image_number for _, m in got]
    assert numbers == list(range(len(got))) and [m.index for _, m in got] == numbers
    assert stats.acquired == len(got) and stats.overflows == 0 and stats.rate_hz > 0
    # a starved CPU can make the camera skip exposures; each skip must show up as lost_before
    skipped = np.array([m.lost_before for _, m in got])
    assert stats.lost == skipped.sum() and all(m.exposure_ms == pytest.approx(5.0) for _, m in got)
    assert got[0][1].focus_z_um == 0.0 and got[-1][1].focus_z_um == 2.5
    times = np.array([m.camera_time_s for _, m in got])
    np.testing.assert_allclose(np.diff(times), 0.005 * (1 + skipped[1:]), atol=1e-5)
    for frame, meta in (got[0], got[-1]):
        assert frame.dtype == np.uint16 and frame.shape == (128, 128)
        expected = sim.render(meta.camera_time_s, meta.focus_z_um, exposure_ms=meta.exposure_ms)
        np.testing.assert_array_equal(frame, expected)


def test_overflow_is_detected_and_counted(core) -> None:
    # 1 MB holds 32 frames of 128x128; a consumer taking 40 ms per frame at 200 Hz overflows it
    source = MicroManagerSource(core, rate_hz=200, buffer_mb=1, queue_frames=1)
    metas = []
    with source:
        for _frame, meta in source.frames():
            metas.append(meta)
            time.sleep(0.04)
            if len(metas) >= 30:
                break
        stats = source.stats
    assert stats.lost > 0 and stats.overflows > 0
    assert sum(m.lost_before for m in metas) == stats.lost
    for prev, cur in zip(metas, metas[1:]):
        assert cur.image_number - prev.image_number - 1 == cur.lost_before
    assert not core.isSequenceRunning()


def test_a_rate_the_camera_cannot_reach_is_refused(core) -> None:
    with pytest.raises(AcquisitionError, match=r"cannot reach 2000 Hz.*tops out at 1600 Hz"):
        MicroManagerSource(core, rate_hz=2000).start()
    with pytest.raises(AcquisitionError, match="longer than the frame interval"):
        MicroManagerSource(core, rate_hz=100, exposure_ms=20).start()
    assert not core.isSequenceRunning()


def test_focus_out_of_range_names_the_range(core) -> None:
    with pytest.raises(ValueError, match=r"outside the travel range \[-100, 100\] um.*LowerLimit-um"):
        core.setPosition(250.0)
    assert core.getPosition() == 0.0


def test_snap_renders_at_the_stage_position(core) -> None:
    core.setPosition(-3.0)
    core.snapImage()
    img = core.getImage()
    assert img.shape == (128, 128) and img.dtype == np.uint16
    assert img.mean() > CONFIG.camera.offset_adu


def test_source_restarts_and_stop_is_idempotent(core) -> None:
    source = MicroManagerSource(core, rate_hz=100)
    source.stop()
    for _ in range(2):
        with source:
            frame, meta = next(source.frames())
        assert meta.index == 0 and meta.image_number == 0 and frame.shape == (128, 128)
        assert source.stats.acquired == 1 and not core.isSequenceRunning()
    source.stop()


def test_sim_cfg_camera_switches_to_confocal(core) -> None:
    core.setProperty("Camera", "Modality", "confocal")
    core.snapImage()
    confocal = core.getImage().astype(np.float64)
    core.setProperty("Camera", "Modality", "widefield")
    core.snapImage()
    widefield = core.getImage().astype(np.float64)
    # same sample, no out-of-focus haze: less light overall in the confocal image
    assert confocal.mean() < widefield.mean()
