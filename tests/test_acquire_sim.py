"""Physics and determinism of the simulated microscope (acquire.sim)."""

from __future__ import annotations

import numpy as np
import pytest

from acquire.sim import SimConfig, WormSimulator
from acquire.sim.render import add_stamps


@pytest.fixture(scope="module")
def sim() -> WormSimulator:
    return WormSimulator(SimConfig(seed=3))


def _isolated_bright_neuron(sim: WormSimulator, t: float) -> int:
    """Index of a bright neuron far (in y, x) from every other and well inside the field."""
    truth = sim.truth(t)
    yx = truth.positions_um[:, 1:]
    dist = np.linalg.norm(yx[:, None] - yx[None], axis=2) + np.eye(len(yx)) * 1e9
    ok = dist.min(1) > 6.0
    assert ok.any()
    return int(np.flatnonzero(ok)[np.argmax(truth.brightness[ok])])


def test_flux_is_conserved_through_defocus(sim: WormSimulator) -> None:
    bank = sim.stamps("widefield")
    sums = []
    for dz in (-15.0, -5.0, 0.0, 5.0, 15.0):
        img = np.zeros((400, 400), np.float32)
        add_stamps(img, bank, np.array([[200.0, 200.0]]), np.array([dz]), np.array([1]), np.array([1e4]))
        sums.append(img.sum(dtype=np.float64))
    np.testing.assert_allclose(sums, 1e4, rtol=1e-4)


@pytest.mark.parametrize("defocus_um", [0.5, 6.0, -9.0])
def test_nuclei_at_any_defocus_are_placed_to_sub_pixel_precision(
    sim: WormSimulator, defocus_um: float
) -> None:
    """A defocused image moves as continuously as its nucleus (no jump at pixel borders)."""
    bank = sim.stamps("widefield")
    yy, xx = np.mgrid[:200, :200]
    for y, x in ((100.3, 100.7), (99.5, 100.25)):
        img = np.zeros((200, 200), np.float32)
        add_stamps(img, bank, np.array([[y, x]]), np.array([defocus_um]), np.array([1]), np.array([1e4]))
        total = img.sum(dtype=np.float64)
        assert total == pytest.approx(1e4, rel=1e-5)
        assert (img * yy).sum() / total == pytest.approx(y, abs=0.01)
        assert (img * xx).sum() / total == pytest.approx(x, abs=0.01)


def _centre(a: np.ndarray, n: int) -> np.ndarray:
    o = (a.shape[0] - n) // 2
    return a[o : o + n, o : o + n]


def test_defocus_above_and_below_focus_differ(sim: WormSimulator) -> None:
    bank = sim.stamps("widefield")
    for dz in (2.0, 5.0):
        above = bank.stamps[1][bank.plane_index(np.array(dz))]
        below = bank.stamps[1][bank.plane_index(np.array(-dz))]
        n = min(above.shape[0], below.shape[0])
        assert np.abs(_centre(above, n) - _centre(below, n)).sum() > 0.1, dz
        assert not np.isclose(above.max(), below.max(), rtol=0.05), dz


def test_confocal_is_optically_sectioned(sim: WormSimulator) -> None:
    conf, wide = sim.stamps("confocal"), sim.stamps("widefield")
    at = lambda bank, dz: bank.stamps[1][bank.plane_index(np.array(dz))]  # noqa: E731
    assert at(conf, 0.0).sum() == pytest.approx(1.0, rel=1e-3)
    assert at(conf, 5.0).sum() < 0.3 and at(conf, -5.0).sum() < 0.3
    assert at(conf, 0.0).shape[0] < at(wide, 0.0).shape[0]  # no out-of-focus halo around the nucleus


def test_neuron_is_sharpest_at_its_true_z(sim: WormSimulator) -> None:
    t = 2.0
    i = _isolated_bright_neuron(sim, t)
    z, y, x = sim.truth(t).positions_um[i]
    row, col = int(round(y / sim.pixel_size_um)), int(round(x / sim.pixel_size_um))
    zs = z + np.arange(-4.0, 4.01, 0.2)
    stack = sim.focal_stack(t, zs, noise=False)
    assert stack.shape == (len(zs), *sim.frame_shape) and stack.dtype == np.float32
    peak = stack[:, row - 1 : row + 2, col - 1 : col + 2].max(axis=(1, 2))
    assert abs(zs[int(np.argmax(peak))] - z) <= 0.41
    # and the in-focus image of the neuron peaks at its true (y, x)
    plane = stack[int(np.argmin(np.abs(zs - z)))]
    win = plane[row - 5 : row + 6, col - 5 : col + 6]
    dr, dc = np.unravel_index(np.argmax(win), win.shape)
    assert abs(dr - 5) <= 1 and abs(dc - 5) <= 1


def test_shot_noise_variance_tracks_mean_in_electrons(sim: WormSimulator) -> None:
    cam = sim.config.camera
    expected = sim.expected_electrons(1.0, 0.0)
    noisy = sim.render(1.0, 0.0).astype(np.float64)
    mean_adu = sim.render(1.0, 0.0, noise=False).astype(np.float64)
    resid_e = (noisy - mean_adu) / cam.gain_adu_per_e
    for lo, hi in ((15, 25), (60, 200), (200, 2000)):
        sel = (expected >= lo) & (expected < hi)
        assert sel.sum() > 500, (lo, hi)
        shot_var = resid_e[sel].var() - cam.read_noise_e**2 - 1 / (12 * cam.gain_adu_per_e**2)
        assert shot_var == pytest.approx(expected[sel].mean(), rel=0.1), (lo, hi)
    for lam in (2.0, 40.0):  # exact-Poisson branch and its normal limit
        img = sim.camera.digitize(np.full((256, 256), lam, np.float32), seed=11).astype(np.float64)
        e = (img - cam.offset_adu) / cam.gain_adu_per_e
        assert e.mean() == pytest.approx(lam, rel=0.02)
        assert e.var() - cam.read_noise_e**2 == pytest.approx(lam, rel=0.06)


def test_render_is_deterministic_for_a_seed() -> None:
    a, b = WormSimulator(SimConfig(seed=5)), WormSimulator(SimConfig(seed=5))
    np.testing.assert_array_equal(a.render(1.25, 0.5), b.render(1.25, 0.5))
    np.testing.assert_array_equal(a.truth(7.0).positions_um, b.truth(7.0).positions_um)
    np.testing.assert_array_equal(a.truth(7.0).activity, b.truth(7.0).activity)
    c = WormSimulator(SimConfig(seed=6))
    assert not np.array_equal(a.truth(0.0).positions_um, c.truth(0.0).positions_um)
    assert not np.array_equal(a.render(1.25, 0.5), a.render(1.26, 0.5))


def test_bleaching_dims_every_nucleus_by_its_half_life_but_not_the_activity() -> None:
    """With a bleaching half-life, brightness (and the light the camera gets from the nuclei) halves every
    half-life from t = 0, while the activity, the dF/F a readout should report, is the unbleached one."""
    plain = WormSimulator(SimConfig(seed=5))
    config = SimConfig(seed=5)
    bleaching = WormSimulator(config.model_copy(update={"worm": config.worm.model_copy(
        update={"bleach_half_life_s": 20.0})}))  # fmt: skip
    for t in (0.0, 20.0, 50.0):
        a, b = plain.truth(t), bleaching.truth(t)
        np.testing.assert_allclose(b.brightness, a.brightness * 0.5 ** (t / 20.0), rtol=1e-12)
        np.testing.assert_array_equal(b.activity, a.activity)
        background = plain.config.camera.background_e * np.prod(plain.frame_shape)
        plain_light, bleached_light = (
            s.expected_electrons(t, 0.0).astype(np.float64).sum() - background for s in (plain, bleaching)
        )
        assert bleached_light / plain_light == pytest.approx(0.5 ** (t / 20.0), rel=1e-3)


def test_truth_has_the_contract_shape_and_moves(sim: WormSimulator) -> None:
    t0, t1 = sim.truth(0.0), sim.truth(5.0)
    n = sim.config.worm.n_neurons
    assert t0.ids.shape == (n,) and t0.positions_um.shape == (n, 3)
    assert t0.activity.shape == (n,) and t0.brightness.shape == (n,)
    assert (t0.activity >= 0).all() and (t0.brightness > 0).all()
    step = np.linalg.norm(t1.positions_um - t0.positions_um, axis=1)
    assert 0.05 < step.mean() < 10.0
    assert (t1.positions_um[:, 1] > 0).all() and (t1.positions_um[:, 2] < sim.frame_shape[1] * 0.325).all()


def test_activity_rises_fast_and_decays_slowly(sim: WormSimulator) -> None:
    from acquire.sim.sample import _events

    act = sim.config.worm.activity
    ids, times, amps = _events(
        sim.config.seed, 2, sim.config.worm.n_neurons, act.event_rate_hz, act.amplitude
    )
    all_ids, all_times = np.concatenate([_events(sim.config.seed, b, sim.config.worm.n_neurons,
        act.event_rate_hz, act.amplitude)[:2] for b in range(0, 5)], axis=1)  # fmt: skip
    for n, te, a in zip(ids, times, amps):  # noqa: B007 - the matching event is used below
        others = all_times[(all_ids == n) & (all_times != te)]
        if np.all(np.abs(others - te) > 15):
            break
    else:
        pytest.fail("no isolated activity event")
    assert sim.worm.activity(te - 0.01)[n] < 0.05 * a
    assert sim.worm.activity(te + 0.4)[n] > 0.6 * a  # fast rise
    assert 0.2 * a < sim.worm.activity(te + 1.5)[n] < 0.6 * a  # ~1.5 s decay
    assert sim.worm.activity(te + 10)[n] < 0.05 * a
