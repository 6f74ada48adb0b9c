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
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
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
    """A new store: raw frames and metadata copied as single-process replay stores them, then the plan."""
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
            writer.write_frame(image, meta)
            if on_copy is not None:
                on_copy(t + 1, reader.n_frames)
    except BaseException as exc:
        writer.close_failed(f"cluster replay stopped while copying raw frames: {type(exc).__name__}: {exc}")
        raise
    writer.close()
    return VolumeRegions.start(out, frames_per_region=region_frames)


def _has_plugin(name: str, dask_scheduler=None) -> bool:
    """On the scheduler: whether workers get the plugin ``name``."""
    return name in dask_scheduler.worker_plugins


def _load_engines(client, plugins: Sequence[ReplayEngine]) -> None:
    """Register each worker plugin (each worker loads its model) unless the cluster already has it."""
    for plugin in plugins:
        if not client.run_on_scheduler(_has_plugin, name=plugin.name):
            log.info("loading the model on the workers")
            client.register_plugin(plugin)


@dataclass
class _Replay:
    """One recording's replay in a batch: what it reads and writes, its engine, its plan and its results."""

    cfg: RunConfig
    recording: Path
    out: Path
    model: Any
    plugin: ReplayEngine
    regions: VolumeRegions | None = None
    resumed: bool = False
    copy_s: float = 0.0
    done_before: int = 0
    results: list[RegionDone] = field(default_factory=list)


def _prepare(cfg: RunConfig, recording: Path, torch_threads: int | None) -> _Replay:
    """Check what a user can get wrong (settings, model, optics) before any work on the cluster."""
    from deepz.optics_check import check_optics
    from infer.model_io import load_model

    _check(cfg)
    recording = Path(recording).resolve()
    reader = RecordingReader(recording)
    model = load_model(cfg.inference.model)
    check_optics(model.manifest, wiring.camera_optics(None, reader.pixel_size_um),
                 allow_mismatch=cfg.inference.allow_optics_mismatch)  # fmt: skip
    plugin = ReplayEngine(_inference_settings(cfg), reader.frame_shape, reader.pixel_size_um, torch_threads)
    return _Replay(cfg, recording, Path(cfg.recording.out).resolve(), model, plugin)


def replay_on_cluster(
    cfg: RunConfig,
    recording: Path,
    client,
    *,
    torch_threads: int | None = None,
    region_frames: int | None = None,
    on_copy: Callable[[Path, int, int], None] | None = None,
    on_plan: Callable[[list[VolumeRegions]], None] | None = None,
    on_region: Callable[[RegionDone], None] | None = None,
) -> dict[str, Any]:
    """Replay ``recording`` into cfg.recording.out on the Dask ``client``'s workers; returns the summary.

    See replay_batch_on_cluster, of which this is the batch of one.
    """
    return replay_batch_on_cluster([(cfg, recording)], client, torch_threads=torch_threads,
                                   region_frames=region_frames, on_copy=on_copy, on_plan=on_plan,
                                   on_region=on_region)[0]  # fmt: skip


def replay_batch_on_cluster(
    runs: Sequence[tuple[RunConfig, Path]],
    client,
    *,
    torch_threads: int | None = None,
    region_frames: int | None = None,
    on_copy: Callable[[Path, int, int], None] | None = None,
    on_plan: Callable[[list[VolumeRegions]], None] | None = None,
    on_region: Callable[[RegionDone], None] | None = None,
) -> list[dict[str, Any]]:
    """Replay each (config, recording) into its config's output on the ``client``'s workers; their summaries.

    Every recording's regions go to the cluster together, so workers stay busy across recordings; a recording
    is finished (indexed, marked complete) as soon as its last region is stored. An unfinished cluster replay
    of the same recording and settings at an output is resumed (unless its config says overwrite).
    ``torch_threads`` per worker (None: the worker's default); ``region_frames`` per task (None: about
    REGIONS_PER_WORKER per worker). Callbacks: (recording, frames copied, of frames), the plans before any
    task runs, each region stored.
    """
    from distributed import as_completed
    from distributed.scheduler import KilledWorker

    started = time.perf_counter()
    replays = [_prepare(cfg, recording, torch_threads) for cfg, recording in runs]
    outs = [r.out for r in replays]
    if len(set(outs)) != len(outs):
        raise ConfigError("two recordings of the batch would be replayed into the same output store")
    workers = len(client.scheduler_info()["workers"])
    cluster = {"scheduler": client.scheduler.address, "workers": workers, "torch_threads": torch_threads}
    plugins = list({r.plugin.name: r.plugin for r in replays}.values())
    with ThreadPoolExecutor(1, thread_name_prefix="deepz-load-engines") as pool:
        loading = pool.submit(_load_engines, client, plugins)  # while the raw frames are copied
        try:
            for r in replays:
                copy_start = time.perf_counter()
                r.resumed = VolumeRegions.planned(r.out) and not r.cfg.recording.overwrite
                if r.resumed:
                    r.regions = _resume(r.out, r.recording, r.cfg, r.model.digest)
                else:
                    n_frames = RecordingReader(r.recording).n_frames
                    frames = region_frames or default_region_frames(n_frames, workers)
                    copied = None if on_copy is None else (lambda n, total, rec=r.recording: on_copy(rec, n, total))
                    r.regions = _start(r.out, r.recording, r.cfg, r.model, region_frames=frames, cluster=cluster,
                                       on_copy=copied)  # fmt: skip
                r.copy_s = time.perf_counter() - copy_start
            loading.result()
        except BaseException:
            for r in replays:  # a failed start leaves no store behind to block the next run
                if r.regions is not None and not r.resumed:
                    shutil.rmtree(r.out, ignore_errors=True)
            raise
    if on_plan is not None:
        on_plan([r.regions for r in replays])
    compute_start = time.perf_counter()
    futures = {}
    for r in replays:
        pending = r.regions.pending()
        r.done_before = len(r.regions.regions) - len(pending)
        for region in pending:
            future = client.submit(replay_region, str(r.recording), str(r.out), region, r.plugin.name, pure=False)
            futures[future] = r
    summaries = {r.out: _finish(r, cluster, started, compute_start) for r in replays if not r.regions.pending()}
    try:
        for future in as_completed(list(futures)):
            r = futures[future]
            r.results.append(future.result())
            if on_region is not None:
                on_region(r.results[-1])
            if len(r.results) == len(r.regions.regions) - r.done_before:
                summaries[r.out] = _finish(r, cluster, started, compute_start)
    except KilledWorker as exc:
        raise ClusterError(
            f"Dask gave up on a region after the workers computing it died several times ({exc}); the "
            "regions done so far are stored: run the same command again to compute the rest."
        ) from None
    finally:
        client.cancel(list(futures))
    return [summaries[r.out] for r in replays]


def _finish(r: _Replay, cluster: dict[str, Any], started: float, compute_start: float) -> dict[str, Any]:
    """Index the recording's volumes and mark it complete, with its summary."""
    regions = r.regions
    compute_s = time.perf_counter() - compute_start
    computed = sum(d.region.stop - d.region.start for d in r.results)
    summary = {
        "mode": "replay on a Dask cluster",
        "recording": str(r.recording),
        "out": str(r.out),
        **cluster,
        "frames": regions.n_frames,
        "volumes": sum(len(regions.volume_frames(region)) for region in regions.regions),
        "regions": len(regions.regions),
        "frames_per_region": regions.frames_per_region,
        "resumed": r.resumed,
        "regions_done_before": r.done_before,
        "regions_computed": len(r.results),
        "frames_computed": computed,
        "volumes_computed": sum(d.volumes for d in r.results),
        "copy_s": round(r.copy_s, 3),
        "compute_s": round(compute_s, 3),
        "frames_per_s": round(computed / compute_s, 3) if compute_s > 0 and computed else None,
        "engines": sorted({d.engine for d in r.results}),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    regions.finish(summary)
    return summary
