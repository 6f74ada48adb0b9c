"""`deepz calibrate`: the calibration focal scan alone, stored with the reference neurons found in it."""

from __future__ import annotations

import time
from pathlib import Path

import typer


def calibrate(
    out: Path,
    *,
    mm_config: Path | None = None,
    sim_config: Path | None = None,
    z_range: tuple[float, float] | None = None,
    step: float | None = None,
    model: Path | None = None,
    settle_ms: float = 0.0,
    overwrite: bool = False,
) -> dict:
    """Scan relative to the current focus (restored after), find the reference neurons, store both in ``out``.

    The range and step default to the model's axial range and step. Returns the stored scan's record as a
    dict plus ``out``.
    """
    import zarr

    from acquire.mm import open_core
    from acquire.zstack import acquire_focal_stack
    from deepz.calibration import build_readout, readout_optics, scan_offsets
    from deepz.config import CalibrationConfig, packaged
    from infer.model_io import default_model_path, load_manifest
    from storage.calibration import ScanRecord, write_scan
    from storage.output_path import check_output, claim_output

    manifest = load_manifest(model or default_model_path())
    offsets = scan_offsets(CalibrationConfig(z_range_um=z_range, step_um=step, settle_ms=settle_ms), manifest)
    check_output(out, overwrite=overwrite)  # before anything moves
    core = open_core(mm_config and packaged(mm_config, ".cfg"),
                     sim_config and packaged(sim_config, ".toml"))  # a bare name: a shipped config
    try:
        from acquire.mm import pixel_size_um

        pixel_um = pixel_size_um(core)
        start = time.time()
        scan = acquire_focal_stack(core, offsets, settle_ms=settle_ms)
        end = time.time()
        focus_after = float(core.getPosition()) if core.getFocusDevice() else None
    finally:
        core.unloadAllDevices()
    reference = build_readout().calibrate(scan.stack, scan.z_um, pixel_um, readout_optics(manifest))
    record = ScanRecord(
        index=0, reason="standalone", focus_um=scan.focus_um, z_um=scan.z_um.tolist(),
        stage_um=scan.stage_um.tolist(), pixel_size_um=pixel_um, frame_index=0, start_host_s=start,
        end_host_s=end, n_reference=len(reference.ids),
        extra={"source": str(mm_config) if mm_config else "simulated microscope", "model": manifest.name},
    )
    claim_output(out, overwrite=overwrite)
    root = zarr.create_group(out, zarr_format=3, attributes={"deepz": {"format": "deepz-calibration"}})
    write_scan(root, record, scan.stack, reference.ids, reference.positions_um)
    return {"out": str(out), "focus_after_um": focus_after, **record.__dict__}


app = typer.Typer()
"""The calibration commands; deepz.cli merges them into `deepz`."""


@app.command("calibrate")
def calibrate_command(
    out: Path = typer.Option(..., "--out", help="Calibration store to write (.zarr)."),
    mm_config: Path = typer.Option(None, "--mm-config", help="Micro-Manager .cfg of a real rig."),
    sim_config: Path = typer.Option(
        None, "--sim-config", help="Simulated microscope TOML or a shipped one (sim-10x; default: 20x)."
    ),
    z_range: tuple[float, float] = typer.Option(
        None, "--z-range", help="Scan offsets LOW HIGH (um) from focus; default: the model's range."
    ),
    step: float = typer.Option(None, "--step", help="Focus step (um); default: the model's axial step."),
    model: Path = typer.Option(None, "--model", help="Model whose axial range and optics to use."),
    settle_ms: float = typer.Option(0.0, "--settle-ms", help="Wait after each focus move (ms)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
) -> None:
    """Focal scan around the current focus (restored after), stored as an NGFF image with the reference
    neurons found in it (IDs and z/y/x in um): what `deepz live` does before streaming."""
    result = calibrate(out, mm_config=mm_config, sim_config=sim_config, z_range=z_range, step=step,
                       model=model, settle_ms=settle_ms, overwrite=overwrite)
    z = result["z_um"]
    typer.echo(
        f"scanned {len(z)} planes {z[0]:+g}..{z[-1]:+g} um around focus {result['focus_um']:g} um "
        f"(restored to {result['focus_after_um']:g} um) in "
        f"{result['end_host_s'] - result['start_host_s']:.2f} s; "
        f"found {result['n_reference']} reference neurons"
    )
    typer.echo(f"wrote {out} (image 0, reference table 0/reference)")
