"""`deepz replay --cluster`: the client copies the raw frames into the new store, Dask workers compute the volumes.

The frames are split into chunk-aligned regions (storage.region_writer); each task computes one region with its
worker's engine and writes it, so no two workers write the same chunk. A store left unfinished (a stopped
client, workers lost past Dask's retries) is finished by running the same replay again: only the regions not
marked done are computed.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from deepz import wiring
from deepz.cluster.connect import ClusterError
from deepz.cluster.replay_worker import RegionDone, ReplayEngine, replay_region
from deepz.config import ConfigError, RunConfig
from storage import RecordingReader, RecordingWriter
from storage.records import RecordingExistsError
from storage.region_writer import VolumeRegions

log = logging.getLogger(__name__)

REGIONS_PER_WORKER = 8
"""Default plan: about this many regions per worker (progress, balance and what a lost worker costs)."""
MAX_REGION_FRAMES = 256


def default_region_frames(n_frames: int, workers: int) -> int:
    """Frames per region: about REGIONS_PER_WORKER regions per worker, 1 to MAX_REGION_FRAMES frames."""
    return min(MAX_REGION_FRAMES, max(1, math.ceil(n_frames / (REGIONS_PER_WORKER * max(1, workers)))))


def _inference_settings(cfg: RunConfig) -> dict[str, Any]:
    """The inference section as workers get it: the model as an absolute path (workers have other cwds)."""
    settings = cfg.inference.model_dump(mode="json")
    if settings["model"] is not None:
        settings["model"] = str(Path(settings["model"]).resolve())
    return settings


def _check(cfg: RunConfig) -> None:
    if cfg.recording.out is None:
        raise ConfigError("a cluster replay needs --out NEW.zarr")
    if cfg.tracking.enabled:
        raise ConfigError(
            "--cluster computes volumes; tracking links volume after volume in one process. Replay with "
            "--no-track, then track the new store (deepz track NEW.zarr), or replay without --cluster."
        )
    if cfg.recording.volume_every == 0:
        raise ConfigError("--volumes none leaves nothing for a cluster to compute: replay without --cluster")


def _resume(out: Path, recording: Path, cfg: RunConfig, digest: str | None) -> VolumeRegions:
    """The unfinished cluster replay at ``out``, if it replays ``recording`` with the same settings."""
    reader = RecordingReader(out)
    attrs = reader.attrs
    same = (
        attrs.get("replayed_from") == str(recording)
        and attrs.get("model_digest") == digest
        and attrs.get("config", {}).get("inference") == cfg.inference.model_dump(mode="json")
        and attrs.get("config", {}).get("recording", {}).get("volumes") == cfg.recording.volumes
    )
    regions = VolumeRegions(out)
    if reader.complete or not same or reader.n_frames != regions.n_frames:
        why = ("is complete" if reader.complete else "replays another recording or other settings" if not same
               else "was stopped while its raw frames were copied")  # fmt: skip
        raise RecordingExistsError(
            f"{out} already exists and {why}, so it is not resumed; pass --overwrite to replace it, or choose "
            "another output path."
        )
    return regions


def _start(out: Path, recording: Path, cfg: RunConfig, model, *, region_frames: int, cluster: dict,
           on_copy: Callable[[int, int], None] | None) -> VolumeRegions:  # fmt: skip
    """A new store: the raw frames and their metadata copied as single-process replay stores them, then the plan."""
    from infer.superres.live import volume_upsample

    reader = RecordingReader(recording)
    source, interval_s = wiring.build_replay_source(recording, realtime=False)
    planes = wiring.planes_and_dpm(cfg.inference, source.frame_shape, source.pixel_size_um)[0]
    writer: RecordingWriter = wiring.build_recorder(
        cfg.recording, frame_shape=source.frame_shape, pixel_size_um=source.pixel_size_um, planes_um=planes,
        frame_interval_s=interval_s, run_config=cfg, model=model,
        extra_attrs={"replayed_from": str(recording), "cluster_replay": cluster},
        volume_upsample=volume_upsample(model.manifest), inputs=(recording,), wait_when_behind=True,
        camera=wiring.camera_optics(None, source.pixel_size_um),
    )  # fmt: skip
    try:
        for t, (image, meta) in enumerate(source.frames()):
            writer.write_frame(image, wiring.frame_record(meta, False))
            if on_copy is not None:
                on_copy(t + 1, reader.n_frames)
    except BaseException as exc:
        writer.close_failed(f"cluster replay stopped while copying raw frames: {type(exc).__name__}: {exc}")
        raise
    writer.close()
    return VolumeRegions.start(out, frames_per_region=region_frames)


def _load_engines(client, plugin: ReplayEngine) -> None:
    """Register the worker plugin (each worker loads the model) unless the cluster already has it."""
    if not client.run_on_scheduler(lambda dask_scheduler, name=plugin.name: name in dask_scheduler.worker_plugins):
        log.info("loading the model on the workers")
        client.register_plugin(plugin)


def replay_on_cluster(
    cfg: RunConfig,
    recording: Path,
    client,
    *,
    torch_threads: int | None = None,
    region_frames: int | None = None,
    on_copy: Callable[[int, int], None] | None = None,
    on_plan: Callable[[VolumeRegions], None] | None = None,
    on_region: Callable[[RegionDone], None] | None = None,
) -> dict[str, Any]:
    """Replay ``recording`` into cfg.recording.out on the Dask ``client``'s workers; returns the summary.

    An unfinished cluster replay of the same recording and settings at the output is resumed (unless
    cfg.recording.overwrite). ``torch_threads`` per worker (None: the worker's default); ``region_frames``
    per task (None: about REGIONS_PER_WORKER per worker). Callbacks: frames copied so far, the plan before any
    task runs, each region stored.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    from deepz.optics_check import check_optics
    from infer.model_io import load_model

    _check(cfg)
    started = time.perf_counter()
    recording, out = Path(recording).resolve(), Path(cfg.recording.out).resolve()
    reader = RecordingReader(recording)
    model = load_model(cfg.inference.model)  # user errors (model, optics) before any work on the cluster
    check_optics(model.manifest, wiring.camera_optics(None, reader.pixel_size_um),
                 allow_mismatch=cfg.inference.allow_optics_mismatch)  # fmt: skip
    workers = len(client.scheduler_info()["workers"])
    cluster = {"scheduler": client.scheduler.address, "workers": workers, "torch_threads": torch_threads}
    plugin = ReplayEngine(_inference_settings(cfg), reader.frame_shape, reader.pixel_size_um, torch_threads)
    with ThreadPoolExecutor(1, thread_name_prefix="deepz-load-engines") as pool:
        loading = pool.submit(_load_engines, client, plugin)  # while the raw frames are copied
        resumed = VolumeRegions.planned(out) and not cfg.recording.overwrite
        if resumed:
            regions = _resume(out, recording, cfg, model.digest)
        else:
            frames = region_frames or default_region_frames(reader.n_frames, workers)
            regions = _start(out, recording, cfg, model, region_frames=frames, cluster=cluster, on_copy=on_copy)
        copied_s = time.perf_counter() - started
        try:
            loading.result()
        except BaseException:
            if not resumed:  # a failed start leaves no store behind to block the next run
                shutil.rmtree(out, ignore_errors=True)
            raise
    pending = regions.pending()
    done_before = len(regions.regions) - len(pending)
    if on_plan is not None:
        on_plan(regions)
    compute_start = time.perf_counter()
    futures = [client.submit(replay_region, str(recording), str(out), region, plugin.name, pure=False)
               for region in pending]  # fmt: skip
    results: list[RegionDone] = []
    try:
        for future in as_completed(futures):
            results.append(future.result())
            if on_region is not None:
                on_region(results[-1])
    except KilledWorker as exc:
        raise ClusterError(
            f"Dask gave up on a region after the workers computing it died several times ({exc}); the "
            f"regions done so far are stored in {out}: run the same command again to compute the rest."
        ) from None
    finally:
        client.cancel(futures)
    compute_s = time.perf_counter() - compute_start
    computed = sum(r.region.stop - r.region.start for r in results)
    summary = {
        "mode": "replay on a Dask cluster",
        "recording": str(recording),
        **cluster,
        "frames": regions.n_frames,
        "regions": len(regions.regions),
        "frames_per_region": regions.frames_per_region,
        "resumed": resumed,
        "regions_done_before": done_before,
        "regions_computed": len(results),
        "frames_computed": computed,
        "volumes_computed": sum(r.volumes for r in results),
        "copy_s": round(copied_s, 3),
        "compute_s": round(compute_s, 3),
        "frames_per_s": round(computed / compute_s, 3) if compute_s > 0 and computed else None,
        "engines": sorted({r.engine for r in results}),
    }
    summary["volumes"] = sum(len(regions.volume_frames(r)) for r in regions.regions)
    summary["elapsed_s"] = round(time.perf_counter() - started, 3)
    regions.finish(summary)
    return summary
