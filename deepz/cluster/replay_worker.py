"""What runs on each Dask worker of a cluster replay: the engine, loaded once, and one region of frames per task."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from distributed import WorkerPlugin, get_worker

from deepz.cluster.worker_path import import_storage

import_storage()  # before any storage import on a Dask worker

from storage.region_writer import Region  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegionDone:
    """What a task reports back: its region, what it computed and where."""

    region: Region
    volumes: int
    seconds: float
    worker: str
    engine: str


class ReplayEngine(WorkerPlugin):
    """Loads the model and builds the engine once per worker (again when a worker is restarted).

    ``torch_threads`` None keeps the worker's torch default. With ``device`` auto and GPUs present, a worker
    whose name is an integer (a local cluster's) takes GPU ``name % count``; others take the first visible one.
    """

    def __init__(self, inference: dict[str, Any], frame_shape: tuple[int, int], pixel_size_um: float,
                 torch_threads: int | None) -> None:  # fmt: skip
        self.inference, self.frame_shape, self.pixel_size_um = inference, frame_shape, pixel_size_um
        self.torch_threads = torch_threads
        key = json.dumps([inference, list(frame_shape), pixel_size_um, torch_threads], sort_keys=True)
        self.name = "deepz-replay-" + hashlib.sha256(key.encode()).hexdigest()[:12]
        self.engine = None

    def setup(self, worker) -> None:
        import torch

        from deepz import wiring
        from deepz.config import InferenceConfig

        if self.torch_threads is not None:
            torch.set_num_threads(self.torch_threads)
        cfg = InferenceConfig.model_validate(self.inference)
        if cfg.device == "auto" and torch.cuda.is_available():
            rank = worker.name if isinstance(worker.name, int) else 0
            cfg = cfg.model_copy(update={"device": f"cuda:{rank % torch.cuda.device_count()}"})
        self.engine = wiring.build_engine(cfg, self.frame_shape, self.pixel_size_um)[0]
        log.info("worker %s: engine %s on %s, %d torch threads", worker.name, self.engine.name,
                 self.engine.device, torch.get_num_threads())  # fmt: skip


def replay_region(recording: str, out: str, region: Region, plugin: str) -> RegionDone:
    """Compute the volumes of ``region``'s frames with this worker's engine and write them into ``out``."""
    import numpy as np

    from storage import RecordingReader
    from storage.region_writer import VolumeRegions

    start = time.perf_counter()
    worker = get_worker()
    engine = worker.plugins[plugin].engine
    regions = VolumeRegions(out)
    frames = regions.volume_frames(region)
    source = RecordingReader(recording).frames
    volumes = [engine.run(source[int(t)][np.newaxis])[0] for t in frames]
    regions.write(region, np.stack(volumes) if volumes else np.zeros((0,), np.uint16))
    return RegionDone(region, len(frames), time.perf_counter() - start, str(worker.name),
                      f"{engine.name} on {engine.device}")
