"""Acquisition commands: `deepz bench acquire`, `deepz acquire-stack`, `deepz simulate frames`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _sim_config(path: Optional[Path]):
    from acquire.sim import SimConfig
    from deepz.config import packaged

    return SimConfig.from_toml(packaged(path, ".toml")) if path else SimConfig()


app = typer.Typer()
"""The acquisition commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The acquisition benches; deepz.cli merges them into `deepz bench`."""

simulate = typer.Typer()
"""The acquisition data sets; deepz.cli merges them into `deepz simulate`."""


@bench.command("acquire")
def bench_acquire(
    size: int = typer.Option(512, "--size", help="Square frame size of the simulated camera (pixels)."),
    rate: float = typer.Option(100.0, "--rate", help="Target frame rate (Hz)."),
    seconds: float = typer.Option(60.0, "--seconds", help="Duration of the sustained run (s)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the results to this JSON file."),
    find_max: bool = typer.Option(
        False,
        "--find-max",
        help="Also find the highest sustained rate per size, rendering every frame and (acquisition path "
        "alone) cycling pre-rendered frames.",
    ),
    max_sizes: list[int] = typer.Option([512, 2048], "--max-size", help="Frame sizes for --find-max."),
    trial_seconds: float = typer.Option(5.0, "--trial-seconds", help="Seconds per --find-max trial."),
    sim_config: Optional[Path] = typer.Option(
        None, "--sim-config", help="Simulator TOML, or a shipped one (sim-10x)."
    ),
) -> None:
    """Stream the simulated camera through UniMMCore: sustained rate, frames lost, render time, CPU."""
    import datetime

    from deepz.lab import acquire_bench as ab
    from deepz.results import check_writable, write_json

    if json_path:
        check_writable(json_path)
    base = _sim_config(sim_config)
    config = ab.with_size(base, size)
    results: dict = {
        "benchmark": "acquire",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": ab.machine(),
        "render": ab.render_timing(config),
    }
    typer.echo(
        f"render {size}x{size}: {results['render']['cpu_ms_mean']} ms CPU/frame "
        f"({results['render']['wall_ms_mean']} ms wall)"
    )
    run = ab.stream(config, rate, seconds)
    run["sustained"] = ab.sustains(run)
    results["run"] = run
    typer.echo(
        f"{size}x{size} at {rate:g} Hz for {run['seconds']:g} s: {run['frames_acquired']} frames, "
        f"{run['frames_lost']} lost, {run['sustained_rate_hz']} Hz sustained, "
        f"CPU {run['process_cpu_percent_of_one_core']}% of a core (system {run['system_cpu_percent']}%)"
    )
    if find_max:
        rates = [10, 20, 25, 50, 75, 100, 150, 200, 250, 300, 400]
        results["find_max"] = [
            ab.find_max_rate(ab.with_size(base, s), rates, trial_seconds, prerendered=pre)
            for s in max_sizes
            for pre in (0, 8)
        ]
        for entry in results["find_max"]:
            typer.echo(
                f"highest sustained rate at {entry['size'][0]} ({entry['camera']}): "
                f"{entry['max_sustained_rate_hz']} Hz"
            )
    results["machine"]["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    if json_path:
        write_json(json_path, results)
        typer.echo(f"results in {json_path}")


@app.command("acquire-stack")
def acquire_stack(
    out: Path = typer.Option(
        ..., "--out", help="Output stack: OME-Zarr (.zarr) or OME-TIFF (.ome.tif), with its physical scale."
    ),
    z_range: tuple[float, float] = typer.Option(
        (-10.0, 10.0), "--z-range", help="Lowest and highest focus offset (um), relative to the current focus."
    ),
    step: float = typer.Option(0.5, "--step", help="Focus step (um)."),
    mm_config: Optional[Path] = typer.Option(
        None, "--mm-config", help="Real rig .cfg (default: simulator)."
    ),
    sim_config: Optional[Path] = typer.Option(
        None, "--sim-config", help="Simulator TOML, or a shipped one (sim-10x)."
    ),
    exposure: Optional[float] = typer.Option(
        None, "--exposure", help="Exposure (ms); default: camera's."
    ),
    binning: Optional[int] = typer.Option(None, "--binning", help="Camera binning, one the camera allows."),
    roi: Optional[tuple[int, int, int, int]] = typer.Option(
        None, "--roi", help="Camera ROI X Y WIDTH HEIGHT in (binned) sensor pixels."
    ),
    settle_ms: float = typer.Option(
        0.0, "--settle-ms", help="Wait after each focus move (ms); steps the stage in software."
    ),
    sequenced: Optional[bool] = typer.Option(
        None, "--sequenced/--stepped",
        help="Hardware-sequenced z (the camera triggers the stage) or software steps; default: sequenced "
        "when the stage can.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing stack at --out."),
) -> None:
    """Scan the focus around the current focus (a useq z plan, hardware-sequenced when the stage can),
    one frame per plane, then restore the focus.

    Saves (Z, H, W) frames with each plane's offset from focus, and the stage positions.
    """
    from acquire.camera import check_exposure, set_binning, set_roi
    from acquire.errors import AcquisitionError
    from acquire.mm import open_core, pixel_size_um
    from acquire.zstack import acquire_focal_stack, z_positions
    from deepz.config import packaged
    from storage.stack_file import save_stack

    if out.exists() and not overwrite:
        raise AcquisitionError(f"{out} already exists; pass --overwrite to replace it or choose another path.")
    z = z_positions(z_range[0], z_range[1], step)
    core = open_core(mm_config and packaged(mm_config, ".cfg"),
                     sim_config and packaged(sim_config, ".toml"))  # a bare name: a shipped config
    try:
        if binning is not None:
            set_binning(core, binning)
        if roi is not None:
            set_roi(core, roi)
        if exposure:
            check_exposure(core, exposure)
            core.setExposure(exposure)
        scan = acquire_focal_stack(core, z, settle_ms=settle_ms, sequenced=sequenced)
        attrs = {
            "source": str(mm_config) if mm_config else "acquire.sim",
            "exposure_ms": core.getExposure(),
            "focus_um": scan.focus_um,
            "stage_um": scan.stage_um.tolist(),
            "z_sequenced": scan.sequenced,
        }
        save_stack(out, scan.stack, scan.z_um, pixel_size_um=pixel_size_um(core), attrs=attrs)
    finally:
        core.unloadAllDevices()
    typer.echo(
        f"wrote {scan.stack.shape[0]} planes of {scan.stack.shape[1]}x{scan.stack.shape[2]} "
        f"({scan.z_um[0]:+g}..{scan.z_um[-1]:+g} um around focus {scan.focus_um:g} um, restored) to {out}"
    )


@simulate.command("frames")
def simulate_frames(
    out: Path = typer.Option(..., "--out", help="Output Zarr group (frames, t_s, truth/...)."),
    seconds: float = typer.Option(2.0, "--seconds", help="Duration (s)."),
    rate: float = typer.Option(100.0, "--rate", help="Frame rate (Hz)."),
    focus: float = typer.Option(0.0, "--focus", help="Focus z (um)."),
    modality: str = typer.Option("widefield", "--modality", help="widefield or confocal."),
    sim_config: Optional[Path] = typer.Option(
        None, "--sim-config", help="Simulator TOML, or a shipped one (sim-10x)."
    ),
) -> None:
    """Render a movie at fixed focus with per-frame ground truth, into a Zarr group.

    Arrays: frames (T, H, W) uint16, t_s (T,), truth/ids (N,), truth/positions_um (T, N, 3) (z, y, x),
    truth/activity (T, N), truth/brightness (T, N); attrs: focus_z_um, modality, pixel_size_um and
    sim_config.
    """
    import numpy as np
    import zarr

    from acquire.sim import WormSimulator

    sim = WormSimulator(_sim_config(sim_config))
    t = np.arange(int(round(seconds * rate))) / rate
    truths = [sim.truth(float(ti)) for ti in t]
    root = zarr.open_group(out, mode="w")
    frames = root.create_array("frames", shape=(len(t), *sim.frame_shape), dtype="uint16",
                               chunks=(1, *sim.frame_shape))  # fmt: skip
    for i, ti in enumerate(t):
        frames[i] = sim.render(float(ti), focus, modality=modality)
    root.create_array("t_s", data=t)
    root.create_array("truth/ids", data=truths[0].ids)
    for name in ("positions_um", "activity", "brightness"):
        root.create_array(f"truth/{name}", data=np.stack([getattr(tr, name) for tr in truths]))
    root.attrs.update({"focus_z_um": focus, "modality": modality, "pixel_size_um": sim.pixel_size_um,
                       "sim_config": sim.config.model_dump(mode="json")})  # fmt: skip
    typer.echo(
        f"wrote {len(t)} frames of {sim.frame_shape[0]}x{sim.frame_shape[1]} with ground truth to {out}"
    )
