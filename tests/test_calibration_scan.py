"""Calibration scans on the simulated microscope: the camera stream pauses for them (before the first frame,
at an interval, on request), focus comes back, the pauses are recorded, and the scans are stored as NGFF
images that standard validators accept, with their reference table beside them."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import pytest
import zarr

from acquire.calibration_source import CalibratingSource, CalibrationScan
from acquire.errors import AcquisitionError
from acquire.mm import MicroManagerSource
from acquire.sim import CameraConfig, SimConfig
from acquire.sim.devices import load_simulated_core
from acquire.zstack import z_positions
from storage.calibration import (
    CalibrationStore,
    ScanRecord,
    read_scans,
    scan_image_path,
    scan_records,
    write_scan,
)

CONFIG = SimConfig(camera=CameraConfig(shape=(64, 64)), seed=2)
RATE = 50.0


@pytest.fixture()
def core():
    core = load_simulated_core(CONFIG)
    core.setPosition(3.0)  # scans are relative to this focus, which must come back after each
    yield core
    core.unloadAllDevices()


def _stream(source: CalibratingSource, n: int) -> list[int]:
    indices = []
    for _, meta in source.frames():
        indices.append(meta.index)
        if len(indices) == n:
            break
    source.stop()
    return indices


def test_stream_pauses_for_scans_and_counts_the_frames_they_cost(core) -> None:
    scans: list[CalibrationScan] = []
    offsets = z_positions(-4, 4, 1)
    source = CalibratingSource(MicroManagerSource(core, rate_hz=RATE), offsets, on_scan=scans.append,
                               interval_s=0.4)
    source.start()
    assert [s.pause.reason for s in scans] == ["start"] and core.getPosition() == 3.0
    indices = _stream(source, 50)
    assert indices == list(range(50))  # indices continue across the pauses
    assert [p.reason for p in source.pauses][1:] and {p.reason for p in source.pauses[1:]} == {"interval"}
    first, later = scans[0], scans[1:]
    np.testing.assert_array_equal(first.scan.z_um, offsets)
    np.testing.assert_allclose(first.scan.stage_um, 3.0 + offsets)
    assert first.scan.stack.shape == (len(offsets), 64, 64) and first.pause.frames_cost == 0
    for cal in later:
        assert 0 < cal.pause.frame_index < 50 and cal.pause.duration_s > 0
        assert cal.pause.frames_cost == round(cal.pause.duration_s * RATE)
        assert cal.scan.focus_um == 3.0
    assert core.getPosition() == 3.0 and not core.isSequenceRunning()


def test_a_requested_scan_happens_after_the_next_frame(core) -> None:
    scans: list[CalibrationScan] = []
    source = CalibratingSource(MicroManagerSource(core, rate_hz=RATE), z_positions(-1, 1, 1),
                               on_scan=scans.append)
    source.start()
    for _, meta in source.frames():
        if meta.index == 5:
            source.request_scan("drift")
        if meta.index == 10:
            break
    source.stop()
    assert [(s.pause.reason, s.pause.frame_index) for s in scans] == [("start", 0), ("drift", 6)]


def test_frames_lost_are_counted_over_every_stream_not_only_since_the_last_restart() -> None:
    core = load_simulated_core(SimConfig(camera=CameraConfig(shape=(128, 128)), seed=2))
    # 1 MB holds 32 frames of 128x128: a consumer taking 40 ms per frame at 200 Hz overflows it in each stream
    camera = MicroManagerSource(core, rate_hz=200, buffer_mb=1, queue_frames=1)
    source = CalibratingSource(camera, z_positions(-1, 1, 1), on_scan=lambda cal: None)
    metas = []
    try:
        for _, meta in source.frames():
            metas.append(meta)
            time.sleep(0.04)
            if len(metas) in (25, 50):
                source.request_scan("test")
            if len(metas) == 75:
                break
        stats, last_stream = source.stats, camera.stats
        source.stop()
    finally:
        core.unloadAllDevices()
    assert [p.reason for p in source.pauses] == ["start", "test", "test"]
    assert stats.acquired == 75 and last_stream.acquired == 25
    assert stats.lost == sum(m.lost_before for m in metas) > last_stream.lost > 0
    assert source.stats == stats  # stopped: nothing more counted


def test_no_focus_stage_is_one_clear_error() -> None:
    from acquire.sim.devices import SimCamera, _python_devices_core

    core = _python_devices_core()  # a camera alone: nothing to step through z
    core.loadPyDevice("Camera", SimCamera(CONFIG))
    core.initializeAllDevices()
    core.setCameraDevice("Camera")
    try:
        source = CalibratingSource(MicroManagerSource(core, rate_hz=RATE), z_positions(-1, 1, 1),
                                   on_scan=print)
        with pytest.raises(AcquisitionError, match="no focus device"):
            source.start()
        assert not core.isSequenceRunning()
    finally:
        core.unloadAllDevices()


def test_a_scan_beyond_the_stage_limits_is_refused_before_moving(core) -> None:
    source = CalibratingSource(MicroManagerSource(core, rate_hz=RATE), z_positions(-150, 0, 50),
                               on_scan=print)
    with pytest.raises(AcquisitionError, match=r"outside the travel range \[-100, 100\]"):
        source.start()
    assert core.getPosition() == 3.0 and not core.isSequenceRunning()


def _record(index: int, z: np.ndarray, frame_index: int) -> ScanRecord:
    return ScanRecord(index=index, reason="start" if index == 0 else "interval", focus_um=3.0,
                      z_um=z.tolist(), stage_um=(3.0 + z).tolist(), pixel_size_um=0.325,
                      frame_index=frame_index,
                      start_host_s=100.0 + index, end_host_s=100.5 + index, pause_s=0.5 * bool(index),
                      frames_cost=25 * bool(index), n_reference=3)


def test_scans_are_ngff_images_with_a_reference_table(tmp_path) -> None:
    from ome_zarr_models.v05 import Image

    yaozarrs = pytest.importorskip("yaozarrs")
    path = tmp_path / "rec.zarr"
    zarr.create_group(path, zarr_format=3)
    z = z_positions(-2, 2, 0.5)
    rng = np.random.default_rng(0)
    stacks = [rng.integers(0, 4000, (len(z), 32, 48)).astype(np.uint16) for _ in range(2)]
    ids = np.array([4, 7, 9])
    positions = np.array([[-1.0, 2.0, 3.0], [0.5, 4.0, 1.0], [1.5, 8.0, 9.5]])
    store = CalibrationStore(path)
    for i, stack in enumerate(stacks):
        store.write(_record(i, z, 40 * i), stack, ids, positions + i)
    for i in range(2):
        image_path = path / scan_image_path(zarr.open_group(path, mode="r"), i)
        image = zarr.open_group(image_path, mode="r")
        model = Image.from_zarr(image)
        multiscale = model.ome_attributes.multiscales[0]
        assert [(a.name, a.unit) for a in multiscale.axes] == [("z", "micrometer"), ("y", "micrometer"),
                                                               ("x", "micrometer")]
        transforms = multiscale.datasets[0].coordinateTransformations
        assert transforms[0].scale == pytest.approx([0.5, 0.325, 0.325])
        assert transforms[1].translation == pytest.approx([-2.0, 0.0, 0.0])
        yaozarrs.validate_zarr_store(str(image_path))
        assert image["reference"].attrs["units"]["z_um"] == "micrometer"
    root = zarr.open_group(path, mode="r")
    assert [asdict(r) for r in scan_records(root)] == [asdict(_record(i, z, 40 * i)) for i in range(2)]
    scans = read_scans(path)
    for i, scan in enumerate(scans):
        np.testing.assert_array_equal(scan.stack, stacks[i])
        np.testing.assert_array_equal(scan.reference_ids, ids)
        np.testing.assert_allclose(scan.reference_positions_um, positions + i)


def test_a_stack_that_does_not_match_its_z_positions_is_refused(tmp_path) -> None:
    root = zarr.create_group(tmp_path / "c.zarr", zarr_format=3)
    with pytest.raises(ValueError, match="one plane per z"):
        write_scan(root, _record(0, np.arange(3.0), 0), np.zeros((4, 8, 8), np.uint16), np.arange(1),
                   np.zeros((1, 3)))
