"""Tracking throughput: detection, refinement, linking and activity timed separately per device."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch

from deepz.lab.blobs import BlobConfig, BlobWorld
from deepz.lab.scaffold import machine
from track.activity import sample_intensity
from track.detect import detect_neurons
from track.live import LiveTracker, LiveTrackerConfig
from track.online import OnlineTracker
from track.refine import refine_positions

__all__ = ["bench_device", "run_track_bench"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[int], object], n: int, device: torch.device) -> float:
    """Median seconds of fn(i) over n calls after one warm-up call."""
    fn(0)
    _sync(device)
    times = []
    for i in range(1, n + 1):
        t0 = time.perf_counter()
        fn(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_device(device: str, volumes: int, shape: tuple[int, int, int], neurons: int) -> dict[str, object]:
    """Per-stage seconds and volumes/s on one device for synthetic volumes with `neurons` nuclei."""
    dev = torch.device(device)
    world = BlobWorld(BlobConfig(shape=shape, n_neurons=neurons))
    voxel = world.config.voxel_um
    vols = [world.volume(i * 0.01, device=dev) for i in range(volumes + 1)]
    dets = [detect_neurons(v, voxel) for v in vols]
    linker = OnlineTracker()
    for i in range(volumes + 1):  # a warm tracker state for the linking timing
        linker.update(i, dets[i])
    offset = volumes + 1
    stages = {
        "detect": _timed(lambda i: detect_neurons(vols[i], voxel), volumes, dev),
        "refine_windowed": _timed(
            lambda i: refine_positions(vols[i], dets[i].positions_um, voxel), volumes, dev
        ),
        "activity_sphere": _timed(
            lambda i: sample_intensity(vols[i], dets[i].positions_um, voxel), volumes, dev
        ),
        "link": _timed(lambda i: linker.update(offset + i, dets[i % len(dets)]), volumes, dev),
    }
    live_rates = {}
    for every in (1, 10):
        live = LiveTracker(LiveTrackerConfig(voxel_um=voxel, detect_every=every), device=dev)
        live_rates[f"detect_every_{every}"] = 1.0 / _timed(
            lambda i, lv=live: lv.process(i, vols[i % len(vols)]), volumes, dev
        )
    return {
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        "seconds_per_volume": stages,
        "volumes_per_s": {k: 1.0 / v for k, v in stages.items()},
        "live_tracker_volumes_per_s": live_rates,
        "detections_per_volume": float(np.mean([len(d) for d in dets])),
    }


def run_track_bench(
    volumes: int = 10,
    shape: tuple[int, int, int] = (32, 512, 512),
    neurons: int = 200,
    devices: list[str] | None = None,
) -> dict[str, object]:
    """Benchmark on CPU and, when present, CUDA; timings are medians over `volumes` calls per stage."""
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    return {
        "benchmark": "track",
        "volume_shape": list(shape),
        "neurons": neurons,
        "volumes_timed": volumes,
        "machine": machine(),
        "results": {d: bench_device(d, volumes, shape, neurons) for d in devices},
        "note": "stages timed separately on synthetic Gaussian-nucleus volumes (deepz.lab.blobs); 'link' is "
        "the online LAP linker with drift correction and dF/F update; live_tracker = full per-volume path.",
    }
