"""`deepz track --cluster`: neurons detected and measured in every stored volume on Dask workers, a run of
volumes per task; the client links them globally (linking needs every volume's detections, in order)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from deepz.cluster.worker_path import import_storage

import_storage()  # before any storage import on a Dask worker

VOLUMES_PER_WORKER = 8
"""Tasks per worker (about): progress and balance."""


@dataclass(frozen=True)
class TrackGeometry:
    """What detection needs to know of the volumes: voxel size and origin (um), and the torch device."""

    voxel_um: tuple[float, float, float]
    origin_um: tuple[float, float, float]
    device: str | None
    torch_threads: int | None


def measure_volumes(recording: str, frames: Sequence[int], geometry: TrackGeometry) -> list[tuple]:
    """(Detections, intensity) of the stored volumes of ``frames`` (a worker task)."""
    import torch

    from storage import RecordingReader
    from track.offline import measure_volume

    if geometry.torch_threads is not None:
        torch.set_num_threads(geometry.torch_threads)
    reader = RecordingReader(recording)
    return [measure_volume(reader.volume(int(t)), geometry.voxel_um, origin_um=geometry.origin_um,
                           device=geometry.device) for t in frames]  # fmt: skip


def measure_on_cluster(client, recording: Path, frames: np.ndarray, geometry: TrackGeometry,
                       on_volumes: Callable[[int], None] | None = None) -> tuple[list, list]:  # fmt: skip
    """Every volume's (detections, intensities), in frame order, measured on the ``client``'s workers."""
    from distributed import as_completed

    workers = max(1, len(client.scheduler_info()["workers"]))
    per_task = max(1, math.ceil(len(frames) / (VOLUMES_PER_WORKER * workers)))
    runs = [frames[i : i + per_task].tolist() for i in range(0, len(frames), per_task)]
    futures = {client.submit(measure_volumes, str(recording), run, geometry, pure=False): i
               for i, run in enumerate(runs)}  # fmt: skip
    results: list[list[tuple] | None] = [None] * len(runs)
    try:
        for future in as_completed(list(futures)):
            results[futures[future]] = future.result()
            if on_volumes is not None:
                on_volumes(len(results[futures[future]]))
    finally:
        client.cancel(list(futures))
    measured = [m for run in results for m in run]
    return [d for d, _ in measured], [i for _, i in measured]
