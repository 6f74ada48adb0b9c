"""On-the-fly training data: worms rendered in torch match acquire.sim's renders; the ring of worms moves on."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from acquire.sim import SimConfig, WormSimulator
from deepz.lab.sim_render import TorchMicroscope, worm_layout, worm_seed
from deepz.lab.worm_stream import WormStream

SHAPE = (96, 96)
Z = np.array([-3.0, 0.0, 2.0], np.float32)


@pytest.fixture(scope="module")
def sim() -> SimConfig:
    base = SimConfig()
    return base.model_copy(update={"camera": base.camera.model_copy(update={"shape": SHAPE})})


@pytest.fixture(scope="module")
def microscope(sim: SimConfig) -> TorchMicroscope:
    return TorchMicroscope(sim, Z, torch.device("cpu"))


def _reference(sim: SimConfig, k: int, noise: bool) -> np.ndarray:
    """acquire.sim's focal stack of worm k of stream seed 1 (the same worm and instant as worm_layout)."""
    ws = WormSimulator(sim.model_copy(update={"seed": worm_seed(1, k)}))
    t = float(np.random.default_rng([1, k]).uniform(0, sim.worm.motion.period_s))
    return ws.focal_stack(t, Z, noise=noise).astype(np.float32)


def _nuclei(plane: np.ndarray, offset: float) -> int:
    """Bright local maxima: in-focus nuclei."""
    peaks = (plane == ndimage.maximum_filter(plane, size=7)) & (plane > offset + 0.2 * (plane.max() - offset))
    return int(peaks.sum())


@pytest.mark.parametrize("k", [0, 5])
def test_torch_renders_match_acquire_sim_renders(sim: SimConfig, microscope: TorchMicroscope, k: int) -> None:
    noisy, clean = (t.numpy() for t in microscope.render_stack(worm_layout(sim, 1, k), seed=3))
    ref_clean, ref_noisy = _reference(sim, k, noise=False), _reference(sim, k, noise=True)
    offset = sim.camera.offset_adu
    for z in range(len(Z)):
        assert clean[z].mean() == pytest.approx(ref_clean[z].mean(), rel=0.01)
        assert clean[z].std() == pytest.approx(ref_clean[z].std(), rel=0.02)
        assert np.corrcoef(clean[z].ravel(), ref_clean[z].ravel())[0, 1] > 0.99
        assert noisy[z].mean() == pytest.approx(ref_noisy[z].mean(), rel=0.01)
        assert noisy[z].std() == pytest.approx(ref_noisy[z].std(), rel=0.03)
        assert abs(_nuclei(clean[z], offset) - _nuclei(ref_clean[z], offset)) <= 1
    assert np.all(noisy == np.floor(noisy)) and noisy.min() >= 0 and noisy.max() <= 65535  # 16-bit ADU
    gain, read = sim.camera.gain_adu_per_e, sim.camera.read_noise_e
    residual = (noisy - clean) / np.sqrt(gain * (clean - offset) + (gain * read) ** 2 + 1 / 12)
    assert residual.mean() == pytest.approx(0.0, abs=0.02) and residual.std() == pytest.approx(1.0, abs=0.03)


def test_the_worm_ring_replaces_its_oldest_worm_and_resumes(microscope: TorchMicroscope) -> None:
    stream = WormStream(microscope, seed=1, resident=2, refresh_every=2, first=4)
    assert stream.next_worm == 6
    first = stream.stacks.target.clone()
    stream.advance()
    assert stream.next_worm == 6 and torch.equal(stream.stacks.target, first)  # not yet: every 2 steps
    stream.advance()
    assert stream.next_worm == 7  # worm 6 replaced worm 4 in slot 0; worm 5 stays in slot 1
    assert torch.equal(stream.stacks.target[1], first[1]) and not torch.equal(stream.stacks.target[0], first[0])
    later = WormStream(microscope, seed=1, resident=2, refresh_every=2, first=4)
    later.set_state(stream.state())
    assert torch.equal(later.stacks.noisy, stream.stacks.noisy) and later.next_worm == 7
