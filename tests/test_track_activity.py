"""Activity: sphere sampling on known volumes, running-percentile dF/F online and offline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from track.activity import ActivityConfig, RunningDff, dff_traces, kalman_gain, sample_intensity

VOXEL = (0.5, 0.25, 0.25)


def test_sphere_mean_minus_background():
    vol = np.full((20, 40, 40), 100.0, np.float32)
    vol[8:13, 15:25, 15:25] = 300.0  # a bright box, larger than the 1 um sphere around its centre
    out = sample_intensity(vol, np.array([[5.0, 5.0, 5.0], [1.0, 1.0, 1.0]]), VOXEL, radius_um=1.0)
    np.testing.assert_allclose(out, [200.0, 0.0], atol=1e-4)
    assert sample_intensity(vol, np.zeros((0, 3)), VOXEL).shape == (0,)


def test_sphere_at_the_border_uses_only_voxels_inside():
    vol = np.full((10, 20, 20), 50.0, np.float32)
    vol[0, 0, 0] = 1050.0
    out = sample_intensity(vol, np.array([[0.0, 0.0, 0.0]]), VOXEL, radius_um=0.3)
    assert out[0] > 0


def test_sampling_rejects_nan_volume():
    with pytest.raises(ValueError, match="NaN"):
        sample_intensity(np.full((4, 4, 4), np.nan), np.zeros((1, 3)), VOXEL)


def test_running_dff_constant_then_step():
    dff = RunningDff(ActivityConfig(baseline_window=10, baseline_percentile=20))
    ids = np.array([7, 3])
    for _ in range(10):
        out = dff.update(ids, np.array([100.0, 50.0]))
    np.testing.assert_allclose(out, 0.0)
    np.testing.assert_allclose(dff.update(ids, np.array([150.0, 100.0])), [0.5, 1.0])
    for _ in range(
        9
    ):  # the cached baseline is refreshed every baseline_every samples once the window is full
        out = dff.update(ids, np.array([150.0, 100.0]))
    np.testing.assert_allclose(out, [0.0, 0.0])


def test_running_dff_matches_offline_traces_and_reuses_slots():
    cfg = ActivityConfig(baseline_window=5, baseline_percentile=30, baseline_every=1)
    rng = np.random.default_rng(0)
    traces = 100 + 20 * rng.random((3, 25))
    online = RunningDff(cfg)
    got = np.stack([online.update(np.arange(3), traces[:, t]) for t in range(25)], axis=1)
    np.testing.assert_allclose(got, dff_traces(traces, cfg), rtol=1e-5)
    online.forget(np.array([0, 1]))
    np.testing.assert_allclose(online.update(np.array([9]), np.array([80.0])), [0.0])  # fresh buffer


def test_running_dff_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        RunningDff().update(np.arange(3), np.ones(2))


def test_dff_floor_scales_with_trace_noise():
    """A false detection on background (mean ~0, noise 10) gives dF/F of order one, not hundreds."""
    rng = np.random.default_rng(1)
    background = rng.normal(0.0, 10.0, 200)
    neuron = 500.0 + rng.normal(0.0, 10.0, 200)
    cfg = ActivityConfig(baseline_window=50, baseline_every=1)
    online = RunningDff(cfg)
    got = np.stack([online.update(np.arange(2), np.array([b, n])) for b, n in zip(background, neuron)], axis=1)
    assert np.abs(got[0]).max() < 3.0  # floor ~ 3 sigma = 30: |dF/F| <= (30 + 3 sigma) / 30
    assert np.abs(got[1, 50:]).max() < 0.15  # a bright neuron's baseline is far above the floor: untouched
    np.testing.assert_allclose(got, dff_traces(np.stack([background, neuron]), cfg), rtol=1e-5, atol=1e-6)
    unfloored = dff_traces(background[None], ActivityConfig(baseline_window=50, noise_floor=0.0))
    assert np.abs(unfloored).max() > 10 * np.abs(got[0]).max()


def test_filling_window_refreshes_on_schedule_for_tracks_of_any_age():
    """Before the window is full, F0 is the percentile of every sample so far for the first baseline_every
    samples, then refreshed every baseline_every samples; a track that starts later keeps its own schedule."""
    cfg = ActivityConfig(baseline_window=100, baseline_percentile=20, baseline_every=10, noise_floor=0.0,
                         min_baseline=0.0)
    rng = np.random.default_rng(2)
    dff = RunningDff(cfg)
    history: dict[int, list[float]] = {0: [], 1: []}
    for t in range(45):
        ids = np.array([0, 1]) if t >= 7 else np.array([0])
        values = 100 + 10 * rng.random(len(ids))
        out = dff.update(ids, values)
        for i, v, d in zip(ids.tolist(), values, out):
            history[i].append(v)
            n = len(history[i])
            f0 = np.percentile(history[i][: n if n <= 10 else n - n % 10], 20)
            assert d == pytest.approx((v - f0) / f0, rel=1e-5)


def test_followed_baseline_matches_offline_traces_including_late_tracks():
    """With baseline_tau, the online F0 follows the window's percentile exactly as dff_traces does, for a
    track that starts later (NaN before) too."""
    cfg = ActivityConfig(baseline_window=20, baseline_percentile=20, baseline_every=1, baseline_tau=10,
                         baseline_settle=5)
    rng = np.random.default_rng(3)
    traces = 100 + 30 * rng.random((2, 80))
    traces[:, 40:] -= 25  # a step the following has to catch up with
    traces[1, :13] = np.nan  # the second track starts at sample 13
    offline = dff_traces(traces, cfg)
    np.testing.assert_allclose(_online_traces(cfg, traces), offline, rtol=1e-5, equal_nan=True)


def test_followed_baseline_tracks_a_bleaching_step_with_its_time_constant():
    """After a 20% drop of a steady trace, F0 reaches the new level with time constant baseline_tau (samples
    after the window's percentile itself has moved), and settles there."""
    cfg = ActivityConfig(baseline_window=50, baseline_percentile=20, baseline_every=1, baseline_tau=40,
                         baseline_settle=10)
    trace = np.r_[np.full(200, 100.0), np.full(600, 80.0)]
    f0 = trace / (1 + _online_dff(cfg, trace))
    assert f0[199] == pytest.approx(100.0)
    moved = 200 + 10  # the window's 20th percentile is 80 from here on (11 of its 50 samples are 80)
    assert f0[moved] > 98.0  # it has barely started to follow
    assert 80 + 20 * np.exp(-1.1) < f0[moved + 40] < 80 + 20 * np.exp(-0.9)
    assert f0[-1] == pytest.approx(80.0, rel=1e-4)


def test_followed_baseline_keeps_the_trace_true_to_activity_from_the_start():
    """A neuron active at the start: the window's percentile comes down over the first minute and bends the
    dF/F; followed slowly, the dF/F stays as true to the activity as the brightness itself."""
    rng = np.random.default_rng(4)
    rate, n = 100, 6000
    t = np.arange(n) / rate
    events = np.r_[0.2, rng.uniform(0, 60, 8)]
    activity = sum(np.where(t >= e, np.exp(-(t - e) / 1.5) * (1 - np.exp(-(t - e) / 0.1)), 0) for e in events)
    brightness = 200 * (1 + activity) + rng.normal(0, 10, n)
    plain = ActivityConfig(baseline_window=n, baseline_every=50)
    followed = ActivityConfig(baseline_window=n, baseline_every=50, baseline_tau=n, baseline_settle=rate)
    r = {
        name: np.corrcoef(_online_dff(cfg, brightness), activity)[0, 1]
        for name, cfg in (("plain", plain), ("followed", followed))
    }
    r_brightness = np.corrcoef(brightness, activity)[0, 1]
    assert r["followed"] > r["plain"] + 0.01
    assert r["followed"] > r_brightness - 0.01


def _online_traces(cfg: ActivityConfig, traces: np.ndarray) -> np.ndarray:
    """(M, T) online dF/F of (M, T) traces, sample by sample (NaN = the track is not there)."""
    online = RunningDff(cfg)
    got = np.full_like(traces, np.nan)
    for t in range(traces.shape[1]):
        ids = np.flatnonzero(np.isfinite(traces[:, t]))
        got[ids, t] = online.update(ids, traces[ids, t])
    return got


def _online_dff(cfg: ActivityConfig, trace: np.ndarray) -> np.ndarray:
    """One track's online dF/F, sample by sample."""
    dff = RunningDff(cfg)
    return np.array([dff.update(np.array([0]), np.array([v]))[0] for v in trace])


def test_shared_trend_matches_offline_traces_including_late_tracks():
    """With common_tau, the online F0 (each track's level times the trend shared by the tracks present) is the
    one dff_traces computes, for a track that starts later too."""
    cfg = ActivityConfig(baseline_window=20, baseline_percentile=20, baseline_every=1, baseline_tau=30,
                         baseline_settle=5, common_tau=8)
    rng = np.random.default_rng(5)
    traces = rng.uniform(100, 250, (12, 1)) + 30 * rng.random((12, 90))
    traces[:, 45:] *= 0.8  # a dimming shared by all
    traces[2, :17] = np.nan  # the third track starts at sample 17
    offline = dff_traces(traces, cfg)
    np.testing.assert_allclose(_online_traces(cfg, traces), offline, rtol=1e-5, equal_nan=True)


def test_a_dimming_of_every_neuron_is_followed_at_the_trends_time_constant_and_one_neurons_at_its_own():
    """Ten steady neurons. When all dim by 20%, F0 follows with common_tau (40 samples); when one alone dims,
    its F0 follows with its own baseline_tau (2000 samples) and the others' F0 does not move."""
    cfg = ActivityConfig(baseline_window=50, baseline_percentile=20, baseline_every=1, baseline_tau=2000,
                         baseline_settle=10, common_tau=40)
    levels = 100.0 + 10 * np.arange(10)
    dimmed = np.ones((10, 800))
    all_dim = dimmed.copy()
    all_dim[:, 200:] = 0.8
    one_dims = dimmed.copy()
    one_dims[0, 200:] = 0.8
    moved = 200 + 10  # the window's 20th percentile is at the new level from here on
    for scale in (all_dim, one_dims):
        traces = levels[:, None] * scale
        online = RunningDff(cfg)
        ids = np.arange(10)
        f0 = np.stack([traces[:, t] / (1 + online.update(ids, traces[:, t])) for t in range(800)], 1)
        np.testing.assert_allclose(f0[:, 199], levels, rtol=1e-6)
        if scale is all_dim:
            share = (f0[:, moved + 40] - 0.8 * levels) / (0.2 * levels)  # of the way still to go
            assert np.all((share > np.exp(-1.1)) & (share < np.exp(-0.9)))
            np.testing.assert_allclose(f0[:, -1], 0.8 * levels, rtol=1e-3)
        else:
            assert f0[0, -1] > 0.8 * levels[0] + 0.2 * levels[0] * np.exp(-600 / 2000 * 1.05)
            np.testing.assert_allclose(f0[1:, -1], levels[1:], rtol=1e-3)


def test_kalman_gain_is_the_steady_state_of_the_filter():
    """The gain equals the fixed point of the Kalman recursion, is 1 without noise and falls with it."""
    step, noise = 0.02, np.array([0.0, 0.01, 0.05])
    variance = np.ones(3)  # posterior variance, iterated to its steady state
    for _ in range(2000):
        prior = variance + step**2
        gain = prior / (prior + noise**2)
        variance = (1 - gain) * prior
    np.testing.assert_allclose(kalman_gain(step, noise), gain, rtol=1e-6)
    assert kalman_gain(step, noise)[0] == 1.0 and np.all(np.diff(gain) < 0)


def test_denoising_leaves_a_noiseless_trace_and_quiets_a_noisy_one():
    rng = np.random.default_rng(2)
    t = np.arange(600)
    truth = 1 + 0.5 * (t > 300) * np.exp(-(t - 300) / 150.0)  # a calcium-like event on a flat baseline
    cfg = ActivityConfig(baseline_window=200, baseline_every=1)
    plain, denoised = RunningDff(cfg), RunningDff(replace(cfg, denoise_step=0.02))
    steps = 100 + 50 * (t > 300) - 20 * (t > 450)  # noiseless: the median change is 0, so is the noise
    one = np.array([0])
    exact = [(plain.update(one, steps[k:k + 1])[0], denoised.update(one, steps[k:k + 1])[0]) for k in t]
    np.testing.assert_array_equal(*np.array(exact).T)  # gain 1: nothing changed

    noisy = 100 * truth + rng.normal(0, 5, len(t))
    plain, denoised = RunningDff(cfg), RunningDff(replace(cfg, denoise_step=0.02))
    raw = np.array([plain.update(one, noisy[k:k + 1])[0] for k in t])
    quiet = np.array([denoised.update(one, noisy[k:k + 1])[0] for k in t])
    flat = (t > 200) & (t <= 300)  # the noise estimate has settled; no activity yet
    assert quiet[flat].std() < 0.6 * raw[flat].std()  # gain ~1/3 at this noise: ~0.45 of the noise's sd
    late = t > 200
    assert np.corrcoef(quiet[late], truth[late])[0, 1] > np.corrcoef(raw[late], truth[late])[0, 1] + 0.01
    offline = dff_traces(noisy[None], replace(cfg, denoise_step=0.02))[0]
    np.testing.assert_allclose(offline, quiet, rtol=1e-4, atol=1e-5)  # online and offline agree


def test_denoise_step_must_not_be_negative():
    with pytest.raises(ValueError, match="denoise_step"):
        ActivityConfig(denoise_step=-0.1)
