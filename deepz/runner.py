"""The composition root of `deepz live`, `deepz replay` and `deepz bench pipeline`: every stage built from a run
config (deepz.wiring), run through deepz.pipeline.Pipeline, and closed."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from deepz.config import ConfigError, RunConfig
from deepz.logs import configured_level
from deepz.optics_check import CameraOptics
from deepz.protocols import FrameSource, VolumeEngine, VolumeTracker
from deepz.signals import stop_on_signals

if TYPE_CHECKING:
    from acquire.mm import MicroManagerSource
    from deepz.compute_process import ComputeProcess
    from deepz.pipeline import StatusCallback
    from deepz.readout_stage import ReadoutStage
    from storage import RecordingWriter

log = logging.getLogger(__name__)


def run_pipeline(cfg: RunConfig, *, replay_from: Path | None = None, realtime: bool = False,
                 on_status: StatusCallback | None = None, status_period_s: float = 1.0) -> dict[str, Any]:
    """Build every stage from `cfg`, run to the end, close everything; returns the summary.

    Live, inference, tracking and the readout run in a compute process unless ``cfg.compute`` is "thread" (a
    realtime replay too when it is "process"); a replay of every frame runs them in threads, with back-pressure.
    """
    from deepz import wiring
    from deepz.pipeline import Pipeline, PipelineStages, Reporting, RunMode

    from storage.output_path import check_output

    live = replay_from is None
    in_process = (cfg.compute == "process" and (live or realtime)) or (cfg.compute == "auto" and live)
    if cfg.recording.out is not None:  # a taken path or a busy port fails in a second, not after the model loads
        check_output(Path(cfg.recording.out), overwrite=cfg.recording.overwrite,
                     inputs=(replay_from,) if replay_from else ())  # fmt: skip
    with contextlib.ExitStack() as stack:
        publisher = wiring.build_publisher(cfg.publish) if live or cfg.view else None  # before the store: a port in
        if publisher is not None:  # use must not leave an empty recording behind
            stack.callback(publisher.close)
        source: FrameSource
        camera_source: MicroManagerSource | None = None  # live: the camera, which calibration scans pause
        if replay_from is None:
            source = camera_source = wiring.build_source(cfg.source)
            frame_interval_s = 1.0 / cfg.source.rate_hz
        else:
            source, frame_interval_s = wiring.build_replay_source(replay_from, realtime=realtime)
        stack.callback(source.stop)
        camera = wiring.camera_optics(cfg.source if live else None, source.pixel_size_um)
        engine: VolumeEngine | None = None
        compute: ComputeProcess | None = None
        if in_process:
            model, planes, _ = wiring.load_checked_model(cfg.inference, source.frame_shape, source.pixel_size_um,
                                                         camera)  # fmt: skip
        else:
            engine, model, planes = wiring.build_engine(cfg.inference, source.frame_shape, source.pixel_size_um,
                                                        camera)  # fmt: skip
        from infer.superres.live import volume_upsample

        upsample = volume_upsample(model.manifest)  # > 1: a super-resolution model's single, finer images
        if upsample > 1 and cfg.tracking.enabled:
            raise ConfigError(
                f"model {model.manifest.name} super-resolves frames x{upsample} into single images; 3D neuron "
                "tracking needs volumes: turn it off (--no-track, or [tracking] enabled = false)."
            )
        dz = float(planes[1] - planes[0]) if len(planes) > 1 else 1.0
        volume_px = source.pixel_size_um / upsample
        voxel_um = (dz, volume_px, volume_px)
        from deepz.calibration import build_readout_stage, calibrating_source

        readout: ReadoutStage | None = None
        tracker: VolumeTracker | None = None
        if engine is None:
            compute = _start_compute(cfg, source, camera, voxel_um, planes, frame_interval_s, replay_from)
            stack.callback(compute.close)
            # live, the camera pauses for a focal scan first and at re-scans
            if compute.info["readout"] and camera_source is not None:
                source = calibrating_source(camera_source, cfg.calibration, model.manifest, compute)
        else:
            readout = build_readout_stage(
                cfg, model.manifest, replay_from=replay_from, device=str(engine.device),
                frame_interval_s=frame_interval_s,
            )  # fmt: skip
            if readout is not None and camera_source is not None:
                source = calibrating_source(camera_source, cfg.calibration, model.manifest, readout)
            # with a readout, every reference neuron's trace comes from it, not from tracking the volumes
            if readout is None:
                tracker = wiring.build_tracker(cfg.tracking, voxel_um, planes, engine_device=str(engine.device))
        if publisher is not None:  # said once the camera and the model are ready
            log.info("publishing on %s (deepz view --connect %s)", publisher.address, publisher.address)
        recorder = wiring.build_recorder(
            cfg.recording, frame_shape=source.frame_shape, pixel_size_um=source.pixel_size_um,
            planes_um=planes,
            frame_interval_s=frame_interval_s, run_config=cfg, model=model,
            extra_attrs={"replayed_from": str(replay_from)} if replay_from else None, volume_upsample=upsample,
            inputs=(replay_from,) if replay_from else (), wait_when_behind=not (live or realtime), camera=camera,
        )
        from display import display_available, launch_viewer_process

        if cfg.view and publisher is not None and display_available():
            curve_key = publisher.curve.secret_file if publisher.curve is not None else None
            viewer = launch_viewer_process(publisher.address, curve_key=curve_key)
            stack.callback(viewer.terminate)
        elif cfg.view and publisher is not None:
            log.info("no display: showing a status line; connect a viewer with deepz view --connect %s",
                     publisher.address)
        pipeline = Pipeline(
            source,
            PipelineStages(engine=engine, compute=compute, recorder=recorder, tracker=tracker, readout=readout,
                           publisher=publisher),
            RunMode(live=live or realtime, live_source=live, duration_s=cfg.duration_s,
                    serialize_compute=engine is not None and engine.device.type == "cpu"),
            Reporting(
                publish_max_hz=cfg.publish.max_hz,
                meta={"planes_um": [float(p) for p in planes], "pixel_size_um": source.pixel_size_um,
                      "volume_pixel_size_um": volume_px, "voxel_um": list(voxel_um)},
                recording=str(cfg.recording.out) if cfg.recording.out else None,
                queue_depth=(lambda: recorder.stats.queue_depth) if recorder is not None else (lambda: 0),
            ),
        )
        try:
            with stop_on_signals(lambda name: pipeline.stop(f"signal {name}")):
                source.start()
                summary = pipeline.run(on_status=on_status, status_period_s=status_period_s)
        except BaseException as exc:
            if recorder is not None and recorder.close_failed(f"run failed: {type(exc).__name__}: {exc}"):
                log.info("removed %s: the run failed before storing any frame", recorder.path)
            raise
        if readout is not None:
            readout.finish()
            summary["calibration"] = readout.summary()
        elif compute is not None and pipeline.compute_done and pipeline.compute_done.get("readout_summary"):
            summary["calibration"] = pipeline.compute_done["readout_summary"]
        if recorder is not None:
            _close_recorder(recorder, summary)
        return summary


def _start_compute(cfg: RunConfig, source: FrameSource, camera: CameraOptics, voxel_um: tuple[float, float, float],
                   planes: np.ndarray, frame_interval_s: float, replay_from: Path | None) -> ComputeProcess:
    """The compute process of a run, started: its stages are built (what building raised is raised here)."""
    from deepz.compute_process import ComputeProcess, ComputeSpec

    spec = ComputeSpec(cfg, source.frame_shape, source.pixel_size_um, camera, voxel_um,
                       tuple(float(p) for p in planes), frame_interval_s, replay_from=replay_from,
                       publish_period_s=1.0 / cfg.publish.max_hz,
                       log_level=configured_level())  # fmt: skip
    compute = ComputeProcess(spec)
    try:
        info = compute.start()
    except BaseException:
        compute.close()
        raise
    log.info("compute process: engine %s on %s%s", info["engine"], info["device"],
             ", tracking" if info["tracking"] else ", readout" if info["readout"] else "")
    return compute


def _close_recorder(recorder: RecordingWriter, summary: dict[str, Any]) -> None:
    """Close the store with the summary; a run that did not end by itself says why in the store too."""
    from storage import WriterError

    ended_early = summary["stopped_by"] not in ("source ended", "duration reached")
    try:
        recorder.close(summary=summary, stopped_reason=summary["stopped_by"] if ended_early else None)
    except WriterError as exc:  # the failure already ended the run: the summary reports it
        summary["recording_error"] = summary["recording_error"] or str(exc)
    stats = recorder.stats  # what the disk holds, counted against what the run handed to the store
    summary["frames_not_stored"] = summary["frames"] - stats.frames_stored
    summary["volumes_not_stored"] = summary["volumes"] - stats.volumes_stored - stats.volumes_skipped_by_policy
    summary["recording_stats"] = {"frames_stored": stats.frames_stored, "volumes_stored": stats.volumes_stored,
                                  "volumes_skipped_for_space": stats.volumes_skipped_for_space,
                                  "queue_depth": stats.queue_depth}  # fmt: skip
