"""`deepz live`, `deepz replay` and `deepz bench pipeline`: run the whole pipeline."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import typer

from deepz.config import ConfigError, RunConfig, load_config
from deepz.runner import run_pipeline

ConfigOpt = typer.Option(None, "--config", help="Run config TOML, or a shipped one (demo, live-gpu, superres-live); "
                         "flags override it.")
OutOpt = typer.Option(None, "--out", help="Recording to write (.zarr).")
PlanesOpt = typer.Option(None, "--planes", help="Planes K per virtual volume.")
ZRangeOpt = typer.Option(None, "--z-range", help="Refocus range LOW HIGH in um relative to focus.")
EngineOpt = typer.Option(None, "--engine", help="auto | torch | torch-opt | onnxruntime | tensorrt.")
ModelOpt = typer.Option(None, "--model", help="Model directory (default: the shipped model).")
VolumesOpt = typer.Option(None, "--volumes", help="Store volumes: every | none | N (every Nth).")
OverwriteOpt = typer.Option(None, "--overwrite", help="Replace an existing recording at --out.")
TrackOpt = typer.Option(None, "--track/--no-track", help="Detect and track neurons in each volume.")
OpticsOpt = typer.Option(None, "--allow-optics-mismatch",
                         help="Run a model trained for other optics than the camera's (warned, recorded).")


def _status_printer(stream=sys.stderr):
    """Status line: rewritten in place on a terminal, one line every few seconds otherwise."""
    tty = stream.isatty()
    last = [0.0]

    def show(s: dict[str, Any]) -> None:
        now = time.perf_counter()
        if not tty and now - last[0] < 5.0:
            return
        last[0] = now
        lat = "-" if s["latency_ms_p50"] is None else f"{s['latency_ms_p50']:.0f}/{s['latency_ms_p99']:.0f} ms"
        line = (
            f"t={s['elapsed_s']:6.1f}s  in {s['input_hz']:6.1f} Hz  volumes {s['volume_hz']:5.2f} Hz  "
            f"latency p50/p99 {lat}  frames {s['frames']}  lost {s['lost']}  skipped {s['skipped']}  "
            f"queue {s['queue_depth']}"
        )
        if s.get("last_calibration_host_s") is not None:
            line += (f"  calibrated {time.time() - s['last_calibration_host_s']:.0f} s ago ({s['calibrations']} "
                     f"scans, {s['reference_neurons']} neurons, paused {s['calibration_pause_s']:.1f} s)")
        stream.write(("\r" + line) if tty else (line + "\n"))
        stream.flush()

    return show


def _overrides(**flags: Any) -> dict[str, Any]:
    """Nest flat CLI flags into the RunConfig's sections, dropping unset ones."""
    sections: dict[str, dict[str, Any]] = {}
    top: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        if name:
            sections.setdefault(section, {})[name] = value
        else:
            top[section] = value
    return {**top, **sections}


def _recorded_settings(recording: Path) -> dict[str, Any]:
    """The inference and tracking sections of the run config stored in a recording."""
    from storage import RecordingReader

    recorded = RecordingReader(recording).attrs.get("config") or {}
    return {key: recorded[key] for key in ("inference", "tracking") if key in recorded}


def _print_summary(summary: dict[str, Any], out: Path | None) -> None:
    """The run's closing lines; a run whose recording failed exits with code 1 after them."""
    lat = summary["frame_to_volume_ms"]
    typer.echo("")
    typer.echo(
        f"{summary['mode']} run ended ({summary['stopped_by']}) after {summary['elapsed_s']:.1f} s: "
        f"{summary['frames']} frames ({summary['input_hz_mean']} Hz), {summary['frames_lost']} lost; "
        f"{summary['volumes']} volumes ({summary['volume_hz_mean']} Hz, engine {summary['engine']} "
        f"{'in the compute process' if summary['compute'] == 'process' else 'in threads'}), "
        f"{summary['volumes_skipped']} frames skipped by inference; frame-to-volume latency "
        f"p50 {lat['p50']} ms, p99 {lat['p99']} ms."
    )
    cal = summary.get("calibration")
    if cal:
        typer.echo(
            f"calibration: {cal['calibrations']} focal scans, {cal['reference_neurons']} reference neurons read "
            f"in {summary['read_out_frames']} frames; re-scans paused the camera {cal['calibration_pause_s']} s "
            f"({cal['calibration_frames_cost']} frames not taken at the nominal rate); calibrated in "
            f"{cal.get('calibrated_in', 'place')}"
        )
        not_read = cal.get("frames_not_read") or {}
        if any(not_read.values()):
            typer.echo(f"readout: no value for {not_read['fell_behind']} frames it fell behind on and "
                       f"{not_read['before_calibration']} before the first calibration")
        if cal.get("store_error"):
            typer.secho(f"error: {cal['store_error']}", err=True, fg=typer.colors.RED)
    if out is not None:
        rec = summary.get("recording_stats", {})
        typer.echo(
            f"recording: {out} ({rec.get('frames_stored')} frames, {rec.get('volumes_stored')} volumes; "
            f"{summary['frames_not_stored']} frames and {summary['volumes_not_stored']} volumes not stored)"
        )
        typer.echo(f"view it:   deepz view {out}")
        typer.echo(f"replay it: deepz replay {out} --out {out.with_name(out.stem + '-replay.zarr')}")
    if summary.get("compute_error"):
        typer.secho(f"error: inference/tracking stopped early ({summary['compute_error']}); raw frames were "
                    "recorded throughout: replay the recording for its volumes", err=True, fg=typer.colors.RED)
    if summary.get("recording_error"):
        typer.secho(f"error: the recording failed: {summary['recording_error']}", err=True, fg=typer.colors.RED)
    if summary.get("recording_error") or summary.get("compute_error"):
        raise typer.Exit(1)


app = typer.Typer()
"""The pipeline commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The pipeline benches; deepz.cli merges them into `deepz bench`."""


@app.command()
def live(
    config: Path = ConfigOpt,
    mm_config: Path = typer.Option(None, "--mm-config", help="Micro-Manager .cfg of a real rig."),
    sim_config: Path = typer.Option(
        None, "--sim-config", help="Simulated microscope TOML or a shipped one (e.g. sim-10x; default: 20x/0.75 NA)."
    ),
    out: Path = OutOpt,
    duration: float = typer.Option(None, "--duration", help="Seconds to run (default: until Ctrl-C)."),
    rate: float = typer.Option(None, "--rate", help="Camera frame rate in Hz."),
    exposure: float = typer.Option(None, "--exposure", help="Exposure in ms (default: 1000 / rate)."),
    binning: int = typer.Option(None, "--binning", help="Camera binning, one the camera allows (1, 2, 4...)."),
    roi: tuple[int, int, int, int] = typer.Option(
        None, "--roi", help="Camera ROI X Y WIDTH HEIGHT in (binned) sensor pixels."
    ),
    buffer_mb: int = typer.Option(None, "--buffer-mb", help="Camera circular buffer in MB."),
    size: int = typer.Option(None, "--size", help="Simulated frame side in pixels."),
    seed: int = typer.Option(None, "--seed", help="Simulator seed."),
    planes: int = PlanesOpt,
    z_range: tuple[float, float] = ZRangeOpt,
    dpm: str = typer.Option(None, "--dpm", help="uniform | tilt | curved."),
    engine: str = EngineOpt,
    model: Path = ModelOpt,
    volumes: str = VolumesOpt,
    view: bool = typer.Option(None, "--view/--no-view", help="Open the viewer (needs a display)."),
    publish: str = typer.Option(None, "--publish", help="zmq endpoint, e.g. tcp://*:5557 for remote viewers."),
    overwrite: bool = OverwriteOpt,
    track: bool = TrackOpt,
    allow_optics_mismatch: bool = OpticsOpt,
    calibrate: bool = typer.Option(
        None, "--calibrate/--no-calibrate",
        help="Start with a focal scan and read every neuron found in it (default: on for the simulator).",
    ),
    recalibrate_s: float = typer.Option(
        None, "--recalibrate-s", help="Re-scan every this many seconds (default 5; 0 = never)."
    ),
    compute: str = typer.Option(
        None, "--compute", help="process (default: inference and tracking never take the camera's time) | thread."
    ),
) -> None:
    """Acquire live (simulated microscope by default), refocus every frame into a volume, record, show."""
    cfg = load_config(config, _overrides(
        source__mm_config=mm_config, source__sim_config=sim_config, source__rate_hz=rate, source__size=size, source__seed=seed,
        source__exposure_ms=exposure, source__binning=binning, source__roi=roi, source__buffer_mb=buffer_mb,
        inference__planes=planes, inference__z_range_um=z_range, inference__dpm=dpm,
        inference__engine=engine, inference__model=model, recording__out=out,
        recording__volumes=volumes, recording__overwrite=overwrite, publish__address=publish,
        tracking__enabled=track, duration_s=duration, view=view,
        inference__allow_optics_mismatch=allow_optics_mismatch,
        calibration__enabled=calibrate, calibration__interval_s=recalibrate_s, compute=compute,
    ))
    summary = _run_cli(cfg, status=_status_printer())
    _print_summary(summary, cfg.recording.out)


@app.command()
def replay(
    recording: Path = typer.Argument(..., help="Recording to replay (.zarr)."),
    out: Path = OutOpt,
    config: Path = ConfigOpt,
    model: Path = ModelOpt,
    planes: int = PlanesOpt,
    z_range: tuple[float, float] = ZRangeOpt,
    engine: str = EngineOpt,
    volumes: str = VolumesOpt,
    realtime: bool = typer.Option(False, "--realtime", help="Replay at the recorded pace (skips when behind)."),
    overwrite: bool = OverwriteOpt,
    track: bool = TrackOpt,
    allow_optics_mismatch: bool = OpticsOpt,
    cluster: str = typer.Option(None, "--cluster", help="Compute the volumes on a Dask cluster: local[:N] "
                                "workers, or a scheduler address tcp://host:8786 (a re-run resumes)."),
) -> None:
    """Re-run a recorded movie through inference and tracking into a new store, every frame.

    Inference and tracking settings default to those the recording was made with.
    """
    from deepz.commands.cluster import cluster_tracking, replay_cli

    if out is None:
        raise ConfigError("replay needs --out NEW.zarr (a recording is never modified in place)")
    cfg = load_config(config, base=_recorded_settings(recording), overrides=_overrides(
        inference__planes=planes, inference__z_range_um=z_range, inference__engine=engine,
        inference__model=model, recording__out=out, recording__volumes=volumes,
        recording__overwrite=overwrite, view=False,
        tracking__enabled=track if cluster is None else cluster_tracking(track),
        inference__allow_optics_mismatch=allow_optics_mismatch,
    ))
    if cluster is not None:
        if realtime:
            raise ConfigError("--realtime paces a replay in one process; it does not go with --cluster")
        return replay_cli(cfg, recording, cluster)
    summary = _run_cli(cfg, replay_from=recording, realtime=realtime)
    _print_summary(summary, cfg.recording.out)


@bench.command("pipeline")
def bench_pipeline(
    json_out: Path = typer.Option(..., "--json", help="Write the results here."),
    config: Path = typer.Option(None, "--config", help="Base run config (e.g. configs/demo.toml); flags override."),
    seconds: float = typer.Option(60.0, "--seconds"),
    rate: float = typer.Option(100.0, "--rate"),
    size: int = typer.Option(256, "--size"),
    planes: int = typer.Option(16, "--planes"),
    engine: str = typer.Option("auto", "--engine"),
    compute: str = typer.Option(
        "auto", "--compute",
        help="process | thread | auto, or several comma-separated (e.g. thread,process) run one after another.",
    ),
    track: bool = TrackOpt,
    calibrate: bool = typer.Option(None, "--calibrate/--no-calibrate", help="Start with a focal scan (readout)."),
    out: Path = typer.Option(None, "--out", help="Recording path (default: a temporary directory)."),
) -> None:
    """End-to-end live run on the simulator: rates, latencies, lost/skipped, with a subscriber process."""
    from deepz.bench_pipeline import bench_pipeline as run_bench
    from deepz.results import check_writable, write_json

    check_writable(json_out)
    modes = [m.strip() for m in compute.split(",") if m.strip()]
    runs = [run_bench(seconds=seconds, rate_hz=rate, size=size, planes=planes, engine=engine, out=out,
                      compute=mode, config=config, track=track, calibrate=calibrate) for mode in modes]
    result = runs[0] if len(runs) == 1 else {"benchmark": "pipeline", "runs": runs}
    write_json(json_out, result)
    for run in runs:
        typer.echo(json.dumps(run["summary"], indent=2))
    typer.echo(f"wrote {json_out}")


def _run_cli(cfg: RunConfig, *, status=None, replay_from: Path | None = None, realtime: bool = False) -> dict:
    """run_pipeline with a progress bar for a replay; user errors go to the CLI's error boundary."""
    if replay_from is not None:
        from deepz.progress import replay_progress

        with replay_progress(replay_from) as progress:
            return run_pipeline(cfg, replay_from=replay_from, realtime=realtime, on_status=progress,
                                status_period_s=0.2)
    return run_pipeline(cfg, on_status=status)
