"""The simulated sample: a C. elegans head with nuclei, calcium-like activity and slow body motion."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from acquire.sim.config import WormConfig

ACTIVITY_BLOCK_S = 10.0  # events are drawn per block of time, seeded by (seed, block): any t is reproducible
_MIN_SPACING_UM = 3.2  # closest allowed centre-to-centre distance of two nuclei
ELLIPSOID_ASPECT = (1.0, 0.9, 1.1)  # (z, y, x) semi-axes relative to the radius: nuclei are slightly oblong


@dataclass(frozen=True)
class GroundTruth:
    """What the sample really is at one instant: every neuron's id, position, activity and brightness."""

    t_s: float
    ids: np.ndarray  # (N,) int
    positions_um: np.ndarray  # (N, 3) float (z, y, x)
    activity: np.ndarray  # (N,) float, calcium signal, 0 = baseline
    brightness: np.ndarray  # (N,) float, expected photo-electrons of the nucleus at this instant, per
    # exposure of camera.exposure_ms (frames taken with another exposure scale it proportionally)


class Worm:
    """Nuclei fixed in body coordinates, moved and lit up as a function of time only (no hidden state)."""

    def __init__(self, config: WormConfig, seed: int, field_centre_um: tuple[float, float]) -> None:
        self.config = config
        self.seed = seed
        self.field_centre_um = field_centre_um
        rng = np.random.default_rng([seed, 0])
        self.body_sud = self._place_nuclei(rng)  # (N, 3): s along body, u sideways, d depth (z)
        n = len(self.body_sud)
        lo, hi = config.nucleus_diameter_um
        self.diameter_um = rng.uniform(lo, hi, n)
        self.class_diameters_um = np.linspace(lo, hi, config.size_classes)
        self.size_class = np.abs(self.diameter_um[:, None] - self.class_diameters_um[None, :]).argmin(1)
        self.base_brightness_e = config.brightness_e * rng.lognormal(
            -0.5 * config.brightness_spread**2, config.brightness_spread, n
        )
        self.ids = np.arange(n, dtype=np.int64)

    def _half_axes(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Body half-width and half-depth along the body: the head tapers towards its tip (s = -L/2)."""
        frac = np.clip((s / self.config.body_length_um) + 0.5, 0.0, 1.0)
        taper = 0.45 + 0.55 * np.sqrt(np.minimum(frac * 2.5, 1.0))
        return self.config.body_half_width_um * taper, self.config.body_half_depth_um * taper

    def _place_nuclei(self, rng: np.random.Generator) -> np.ndarray:
        """Rejection-sample nucleus centres inside the body with a minimum spacing."""
        cfg = self.config
        placed: list[np.ndarray] = []
        for _ in range(cfg.n_neurons * 400):
            if len(placed) == cfg.n_neurons:
                break
            s = rng.uniform(-0.5, 0.5) * cfg.body_length_um
            hw, hd = self._half_axes(np.array(s))
            r, phi = np.sqrt(rng.uniform()), rng.uniform(0, 2 * np.pi)
            cand = np.array([s, 0.85 * hw * r * np.cos(phi), 0.85 * hd * r * np.sin(phi)])
            if placed and np.min(np.linalg.norm(np.asarray(placed) - cand, axis=1)) < _MIN_SPACING_UM:
                continue
            placed.append(cand)
        if len(placed) < cfg.n_neurons:
            raise ValueError(
                f"Could not fit {cfg.n_neurons} nuclei {_MIN_SPACING_UM} um apart into the worm body; "
                "lower worm.n_neurons or enlarge body_length_um / body_half_width_um / body_half_depth_um."
            )
        return np.asarray(placed)

    def positions_um(self, t_s: float) -> np.ndarray:
        """(N, 3) nucleus centres (z, y, x) in um at time t."""
        cfg, mot = self.config, self.config.motion
        s, u, d = self.body_sud.T
        phase = 2 * np.pi * t_s / mot.period_s
        half_l = cfg.body_length_um / 2
        # centreline y(s): a static sag plus a slowly travelling bend; its slope gives the body normal
        yc = cfg.curvature_um * (1 - (s / half_l) ** 2) + mot.bend_um * np.sin(np.pi * s / half_l + phase)
        slope = -2 * cfg.curvature_um * s / half_l**2 + mot.bend_um * np.pi / half_l * np.cos(
            np.pi * s / half_l + phase
        )
        norm = np.sqrt(1 + slope**2)
        cy, cx = self.field_centre_um
        ty = mot.translation_um * np.sin(phase)
        tx = mot.translation_um * np.sin(0.77 * phase + 1.0)
        tz = mot.z_drift_um * np.sin(0.59 * phase + 2.0)
        x = cx + tx + s - u * slope / norm
        y = cy + ty + yc - cfg.curvature_um / 2 + u / norm
        return np.stack([d + tz, y, x], axis=1)

    def activity(self, t_s: float) -> np.ndarray:
        """(N,) calcium signal at t: sum over past events of amp * (1 - e^(-dt/rise)) * e^(-dt/decay)."""
        act = self.config.activity
        horizon = t_s - 12 * act.decay_s
        out = np.zeros(len(self.ids))
        for block in range(
            int(np.floor(horizon / ACTIVITY_BLOCK_S)), int(np.floor(t_s / ACTIVITY_BLOCK_S)) + 1
        ):
            ids, times, amps = _events(self.seed, block, len(self.ids), act.event_rate_hz, act.amplitude)
            dt = t_s - times
            keep = dt >= 0
            dt = dt[keep]
            kernel = (1 - np.exp(-dt / act.rise_s)) * np.exp(-dt / act.decay_s)
            out += np.bincount(ids[keep], weights=amps[keep] * kernel, minlength=len(self.ids))
        return out

    def truth(self, t_s: float) -> GroundTruth:
        """The ground truth at time t."""
        activity = self.activity(t_s)
        half_life = self.config.bleach_half_life_s
        bleached = 0.5 ** (t_s / half_life) if half_life > 0 else 1.0
        return GroundTruth(
            t_s=float(t_s),
            ids=self.ids.copy(),
            positions_um=self.positions_um(t_s),
            activity=activity,
            brightness=self.base_brightness_e * (1 + activity) * bleached,
        )


@lru_cache(maxsize=64)
def _events(seed: int, block: int, n: int, rate_hz: float, amplitude: float) -> tuple[np.ndarray, ...]:
    """Activity events (neuron ids, times, amplitudes) of one time block, a pure function of its arguments."""
    rng = np.random.default_rng([seed, 1, block & 0xFFFFFFFF, 1 if block < 0 else 0])
    k = rng.poisson(rate_hz * n * ACTIVITY_BLOCK_S)
    ids = rng.integers(0, n, k)
    times = block * ACTIVITY_BLOCK_S + rng.uniform(0, ACTIVITY_BLOCK_S, k)
    amps = amplitude * rng.lognormal(-0.08, 0.4, k)
    for arr in (ids, times, amps):
        arr.flags.writeable = False
    return ids, times, amps
