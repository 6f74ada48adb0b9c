"""Bad input to acquisition: each a clear AcquisitionError naming problem and fix, nothing left running."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import numpy as np
import pytest
from pymmcore_plus.experimental.unicore import CameraDevice, UniMMCore

from acquire.array_source import ArraySource
from acquire.errors import AcquisitionError, SimConfigError
from acquire.mm import MicroManagerSource, open_core
from acquire.sim import SimConfig

REPO = Path(__file__).resolve().parents[1]


class ByteCamera(CameraDevice):
    """A camera delivering 8-bit frames."""

    def get_exposure(self) -> float:
        return 10.0

    def set_exposure(self, exposure: float) -> None:
        pass

    def shape(self) -> tuple[int, int]:
        return (32, 32)

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint8)

    def start_sequence(self, n, get_buffer):
        while True:
            get_buffer((32, 32), np.uint8)[:] = 1
            yield {}


class ShrinkingCamera(ByteCamera):
    """Announces 32x32 uint16 frames but delivers 16x16 ones."""

    def dtype(self) -> np.dtype:
        return np.dtype(np.uint16)

    def start_sequence(self, n, get_buffer):
        while True:
            get_buffer((16, 16), np.uint16)[:] = 1
            yield {}


class SkippingCamera(ShrinkingCamera):
    """Delivers uint16 32x32 frames whose own counter skips numbers 3 and 4 (frames the camera dropped)."""

    def start_sequence(self, n, get_buffer):
        for number in (0, 1, 2, 5, 6, 7):
            get_buffer((32, 32), np.uint16)[:] = number
            yield {"CameraFrameNumber": str(number)}
        while True:  # then idle until stopped
            time.sleep(0.01)
            get_buffer((32, 32), np.uint16)[:] = 0
            number += 1
            yield {"CameraFrameNumber": str(number)}


def _core_with(camera: CameraDevice) -> UniMMCore:
    core = UniMMCore()
    core.loadPyDevice("Cam", camera)
    core.initializeAllDevices()
    core.setCameraDevice("Cam")
    return core


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(AcquisitionError, match=r"does not exist.*rig-template.cfg"):
        open_core(tmp_path / "nope.cfg")


def test_missing_device_adapters_say_how_to_install_them() -> None:
    with pytest.raises(AcquisitionError) as err:
        open_core(REPO / "configs" / "rig-template.cfg")
    msg = str(err.value)
    assert "HamamatsuHam" in msg and "mmcore install" in msg and "MICROMANAGER_PATH" in msg


def test_malformed_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.cfg"
    bad.write_text("this is not,a micro-manager,line\n")
    with pytest.raises(
        AcquisitionError, match=r"Could not load Micro-Manager config .*line 1.*Fix that line"
    ):
        open_core(bad)


def test_unknown_device_label(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.cfg"
    text = (
        (REPO / "configs" / "sim.cfg")
        .read_text()
        .replace("Property,Core,Camera,Camera", "Property,Core,Camera,Camra")
    )
    cfg.write_text(text)
    with pytest.raises(AcquisitionError, match=r"Camra"):
        open_core(cfg)


def test_sim_cfg_loads_and_bad_sim_toml_is_named(tmp_path: Path) -> None:
    core = open_core(REPO / "configs" / "sim.cfg")
    assert core.getCameraDevice() == "Camera" and core.getFocusDevice() == "Z"
    core.unloadAllDevices()
    bad = tmp_path / "sim.toml"
    bad.write_text("[camera]\nshape = [4, 4]\n")
    with pytest.raises(SimConfigError, match=r"malformed \(camera: .*16x16"):
        SimConfig.from_toml(bad)
    with pytest.raises(SimConfigError, match="does not exist"):
        SimConfig.from_toml(tmp_path / "missing.toml")
    assert SimConfig.from_toml(REPO / "configs" / "sim.toml") == SimConfig()


def test_wrong_dtype_is_refused_before_starting() -> None:
    core = _core_with(ByteCamera())
    with pytest.raises(AcquisitionError, match=r"1-byte pixels.*16-bit"):
        MicroManagerSource(core).start()
    assert not core.isSequenceRunning()


def test_wrong_shape_stops_acquisition() -> None:
    core = _core_with(ShrinkingCamera())
    source = MicroManagerSource(core)
    with pytest.raises(AcquisitionError, match=r"shape \(16, 16\).*\(32, 32\)"):
        with source:
            for _ in source.frames():
                pass
    assert not core.isSequenceRunning()


def test_frames_the_camera_dropped_are_counted() -> None:
    core = _core_with(SkippingCamera())
    with MicroManagerSource(core) as source:
        metas = [meta for _, meta in itertools.islice(source.frames(), 5)]
        stats = source.stats
    assert [m.lost_before for m in metas] == [0, 0, 0, 2, 0]
    assert [m.image_number for m in metas] == [0, 1, 2, 3, 4]  # the core saw no gap: only the camera did
    assert stats.lost == 2 and stats.overflows == 0


def test_no_camera_and_bad_rate() -> None:
    with pytest.raises(AcquisitionError, match="no camera selected"):
        MicroManagerSource(UniMMCore())
    core = _core_with(ShrinkingCamera())
    with pytest.raises(AcquisitionError, match="must be positive"):
        MicroManagerSource(core, rate_hz=0)


def test_array_source_replays_and_rejects_bad_arrays() -> None:
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    with ArraySource(frames) as src:
        got = list(src.frames())
    assert [m.index for _, m in got] == [0, 1, 2] and src.stats.acquired == 3
    np.testing.assert_array_equal(got[2][0], frames[2])
    assert src.frame_shape == (4, 5)
    with pytest.raises(ValueError, match="uint16"):
        ArraySource(frames.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        ArraySource(frames[0])
    with pytest.raises(ValueError, match="one per frame"):
        ArraySource(frames, metas=[got[0][1]])
