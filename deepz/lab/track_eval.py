"""Simulated runs with ground truth: true (focal-stack) or virtual (Deep-Z) volumes, live tracker."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from deepz.lab.scaffold import shipped_deepz, sim_config
from track.evaluate import TrackingScorer
from track.live import LiveTracker, LiveTrackerConfig
from track.online import TrackerConfig

__all__ = ["RunConfig", "VolumeStream", "evaluate_run", "in_view", "simulated_volumes"]


@dataclass(frozen=True)
class RunConfig:
    """A simulated recording: seed, duration, volume rate, planes, and where volumes come from."""

    seed: int = 0
    seconds: float = 60.0
    rate_hz: float = 100.0
    planes: int = 32
    z_range_um: tuple[float, float] = (-10.0, 10.0)
    virtual: bool = False  # True: Deep-Z volumes from one wide-field frame; False: wide-field focal stacks
    source: Literal["sim", "blobs"] = "sim"
    frame_shape: tuple[int, int] | None = None  # None = the simulator's default camera
    engine: str = "torch"
    detect_every: int = 1
    max_gap_s: float = 2.0

    @property
    def n_volumes(self) -> int:
        return max(1, round(self.seconds * self.rate_hz))


@dataclass
class VolumeStream:
    """Geometry of the volumes and an iterator of (t index, t_s, volume (Z, Y, X), truth) tuples."""

    voxel_um: tuple[float, float, float]
    origin_um: tuple[float, float, float]
    volumes: Iterator[tuple[int, float, np.ndarray, object]]
    info: dict[str, object] = field(default_factory=dict)


def simulated_volumes(cfg: RunConfig) -> VolumeStream:
    """Volumes and truth of a run from acquire.sim (true or virtual) or from the Gaussian-blob stand-in."""
    planes = np.linspace(cfg.z_range_um[0], cfg.z_range_um[1], cfg.planes)
    dz = float(planes[1] - planes[0]) if cfg.planes > 1 else 1.0
    times = np.arange(cfg.n_volumes) / cfg.rate_hz
    if cfg.source == "blobs":
        if cfg.virtual:
            raise ValueError(
                "Virtual volumes need the simulator (source='sim'); the blob stand-in has no optics."
            )
        from deepz.lab.blobs import BlobConfig, BlobWorld

        world = BlobWorld(BlobConfig(shape=(cfg.planes, *(cfg.frame_shape or (256, 256))), seed=cfg.seed))
        gen = (
            (i, float(t), world.volume(float(t)).numpy(), world.truth(float(t))) for i, t in enumerate(times)
        )
        return VolumeStream(world.config.voxel_um, (0.0, 0.0, 0.0), gen, {"source": "blobs"})
    from acquire.sim import SimConfig, WormSimulator

    sim = WormSimulator(
        sim_config(cfg.frame_shape, seed=cfg.seed) if cfg.frame_shape else SimConfig(seed=cfg.seed)
    )
    px = sim.pixel_size_um
    origin = (float(planes[0]), 0.0, 0.0)
    if not cfg.virtual:
        gen = (
            (i, float(t), sim.focal_stack(float(t), planes, noise=True), sim.truth(float(t)))
            for i, t in enumerate(times)
        )
        return VolumeStream((dz, px, px), origin, gen, {"source": "sim", "volumes": "widefield focal stack"})
    engine, info = shipped_deepz(sim.frame_shape, planes, engine=cfg.engine)
    info = {"source": "sim", "volumes": "virtual (Deep-Z)", **info}

    def virtual() -> Iterator[tuple[int, float, np.ndarray, object]]:
        for i, t in enumerate(times):
            frame = sim.render(float(t), 0.0, noise=True)
            yield i, float(t), engine.run(frame[None])[0], sim.truth(float(t))

    return VolumeStream((dz, px, px), origin, virtual(), info)


def in_view(positions_um: np.ndarray, origin_um, voxel_um, shape, margin_um: float = 1.5) -> np.ndarray:
    """Neurons whose centre lies inside the imaged volume, at least margin_um from its faces."""
    lo = np.asarray(origin_um) + margin_um
    hi = np.asarray(origin_um) + (np.asarray(shape) - 1) * np.asarray(voxel_um) - margin_um
    return np.all((positions_um >= lo) & (positions_um <= hi), axis=1)


def evaluate_run(
    cfg: RunConfig,
    live: LiveTrackerConfig | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Track a simulated run volume by volume and score it against the simulator's ground truth."""
    stream = simulated_volumes(cfg)
    live = live or LiveTrackerConfig(
        voxel_um=stream.voxel_um,
        origin_um=stream.origin_um,
        tracker=TrackerConfig(max_gap=max(5, round(cfg.max_gap_s * cfg.rate_hz))),
        detect_every=cfg.detect_every,
    )
    tracker = LiveTracker(live)
    scorer = TrackingScorer()
    tracking_s = render_s = 0.0
    t_prev = time.perf_counter()
    for i, t_s, volume, truth in stream.volumes:
        t0 = time.perf_counter()
        render_s += t0 - t_prev
        state = tracker.process(i, volume)
        t_prev = time.perf_counter()
        tracking_s += t_prev - t0
        view = in_view(truth.positions_um, stream.origin_um, stream.voxel_um, volume.shape)
        scorer.add(t_s, truth.ids, truth.positions_um, truth.activity, state, in_view=view)
        if progress is not None:
            progress(i + 1, cfg.n_volumes)
    score = scorer.score()
    return {
        "run": asdict(cfg),
        "volumes": stream.info,
        "voxel_um": list(stream.voxel_um),
        "score": score.to_dict(),
        "n_tracks_created": int(tracker.tracker.next_id),
        "seconds_volume_generation": render_s,
        "seconds_tracking": tracking_s,
        "tracking_volumes_per_s": cfg.n_volumes / max(tracking_s, 1e-9),
    }
