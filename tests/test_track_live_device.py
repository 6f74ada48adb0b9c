"""The live tracker converts each volume once (validated, on its device) and hands that tensor to detection,
refinement and activity sampling; results are those of the public functions on the array."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import track.volume
from deepz.lab.blobs import BlobConfig, BlobWorld
from track.activity import sample_intensity
from track.detect import detect_neurons
from track.live import LiveTracker, LiveTrackerConfig
from track.online import OnlineTracker


@pytest.fixture
def conversions(monkeypatch):
    """Counts the volume conversions (validation + copy to the device) made by track.volume."""
    calls = []
    convert = track.volume._converted

    def counting(volume, device):
        calls.append(type(volume).__name__)
        return convert(volume, device)

    monkeypatch.setattr(track.volume, "_converted", counting)
    return calls


@pytest.mark.parametrize("detect_every", [1, 3])
def test_one_conversion_per_volume(conversions, detect_every):
    world = BlobWorld(BlobConfig(shape=(12, 64, 64), n_neurons=8, seed=2))
    live = LiveTracker(LiveTrackerConfig(voxel_um=world.config.voxel_um, detect_every=detect_every), device="cpu")
    for t in range(6):  # with detect_every 3: detection on 0 and 3, refinement between
        state = live.process(t, world.volume(t * 0.1))
        assert len(state.ids) > 0
    assert len(conversions) == 6


def test_results_equal_the_public_functions_on_the_array(conversions):
    world = BlobWorld(BlobConfig(shape=(12, 64, 64), n_neurons=8, seed=2))
    cfg = LiveTrackerConfig(voxel_um=world.config.voxel_um)
    live, reference = LiveTracker(cfg), OnlineTracker(cfg.tracker)
    for t in range(3):
        volume = np.asarray(world.volume(t * 0.1))
        state = live.process(t, torch.from_numpy(volume))
        det = detect_neurons(volume, cfg.voxel_um, config=cfg.detect)
        intensity = sample_intensity(volume, det.positions_um, cfg.voxel_um, radius_um=cfg.tracker.activity.radius_um)
        expected = reference.update(t, det, intensity)
        np.testing.assert_array_equal(state.ids, expected.ids)
        np.testing.assert_allclose(state.positions_um, expected.positions_um)
        np.testing.assert_allclose(state.intensity, expected.intensity)
        np.testing.assert_allclose(state.dff, expected.dff)
    assert conversions.count("Tensor") == 3  # the tracker's: one per volume; the rest are the reference's


def test_the_tracker_runs_on_the_configured_device_else_the_engines():
    from deepz.config import TrackingConfig
    from deepz.wiring import build_tracker
    from infer.engine import EngineUnavailable

    planes = np.linspace(-5.0, 5.0, 4)
    auto = build_tracker(TrackingConfig(), (1.0, 0.325, 0.325), planes, engine_device="cpu")
    assert auto.tracker.device == torch.device("cpu")
    pinned = build_tracker(TrackingConfig(device="cpu"), (1.0, 0.325, 0.325), planes, engine_device="cpu")
    assert pinned.tracker.device == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(EngineUnavailable, match="no CUDA GPU"):
            build_tracker(TrackingConfig(device="cuda"), (1.0, 0.325, 0.325), planes)
