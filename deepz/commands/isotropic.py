"""`deepz isotropic` and `deepz evaluate-isotropic`: Self-Net isotropic restoration of anisotropic volumes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from deepz.data_paths import TARGETTRACK_HELP, targettrack_dir
from deepz.isotropic_restore import restore_source
from deepz.results import results_file


app = typer.Typer()
"""The isotropic restoration commands; deepz.cli merges them into `deepz`."""


@app.command("isotropic")
def isotropic_cmd(
    source: Path = typer.Argument(
        ..., help="Recording (.zarr), OME-Zarr/Zarr array, TIFF or .npy z-stack."
    ),
    out: Path = typer.Option(..., "--out", help="Output OME-Zarr image (t, z, y, x), e.g. REC-iso.zarr."),
    voxel_um: Optional[str] = typer.Option(
        None,
        "--voxel-um",
        help="Input voxel DZ,DY,DX in um (needed for "
        "TIFF/.npy; overrides a recording's or OME-Zarr's own).",
    ),
    axes: Optional[str] = typer.Option(
        None,
        "--axes",
        help="Axis order of TIFF/.npy/Zarr data over t,c,z,y,x "
        "(default zyx or tzyx; targettrack: xyz, cxyz).",
    ),
    channel: Optional[int] = typer.Option(
        None, "--channel", help="Channel to restore when the data has a c axis."
    ),
    z_step_um: Optional[float] = typer.Option(
        None, "--z-step-um", help="Output z step (default: the pixel size, isotropic voxels)."
    ),
    steps: Optional[int] = typer.Option(
        None, "--steps", help="Training steps (default 600, about 1-2 min on one CPU core)."
    ),
    train_volumes: int = typer.Option(
        1, "--train-volumes", help="Recording volumes to train on (evenly spread)."
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Reuse a model saved with --save-model."),
    save_model: Optional[Path] = typer.Option(None, "--save-model", help="Save the trained model here."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
) -> None:
    """Self-Net: learn the axial degradation from the volume itself and restore isotropic resolution."""
    summary = restore_source(
        source,
        out,
        voxel_um=voxel_um,
        axes=axes,
        channel=channel,
        z_step_um=z_step_um,
        steps=steps,
        train_volumes=train_volumes,
        model_dir=model,
        save_model_dir=save_model,
        overwrite=overwrite,
    )
    typer.echo(json.dumps(summary, indent=1))


@app.command("evaluate-isotropic")
def evaluate_isotropic_cmd(
    seed: int = typer.Option(0, "--seed", help="Simulator seed of the worm to restore."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for xz-slice comparison plots."),
    targettrack: bool = typer.Option(
        False, "--targettrack", help="Also restore the real targettrack volumes."
    ),
    targettrack_path: Optional[Path] = typer.Option(None, "--targettrack-dir", help=TARGETTRACK_HELP),
    steps: int = typer.Option(600, "--steps", help="Training steps per model."),
) -> None:
    """Isotropy ratio (axial/lateral FWHM of nuclei) and error vs truth: Self-Net vs interpolation.

    The JSON is written also when the run fails or is interrupted, with what it has ("complete": false).
    """
    import torch

    from infer.isotropic import IsotropicConfig
    from deepz.lab.isotropic_eval import evaluate_simulated, evaluate_targettrack

    real_data = targettrack_dir(targettrack_path) if targettrack else None  # before minutes of training
    config = IsotropicConfig(steps=steps, seed=seed)
    with results_file(json_out) as results:
        results["torch_threads"] = torch.get_num_threads()
        results["simulated"] = evaluate_simulated(seed, config, plots=plots)
        if real_data is not None:
            results["targettrack"] = evaluate_targettrack(config, root=real_data, plots=plots)
    sim = results["simulated"]
    for name in ("input_interpolated", "selfnet", "truth"):
        iso = sim["isotropy"][name]
        err = sim["error_vs_truth"].get(name)
        typer.echo(
            f"simulated {name:>18}: isotropy {iso['isotropy_ratio']:.3f} "
            f"(axial {iso['axial_fwhm_um']:.2f} / lateral {iso['lateral_fwhm_um']:.2f} um)"
            + (
                f", PSNR {err['psnr_db']:.2f} dB, SSIM xz {err['ssim_xz']:.4f}, NRMSE {err['nrmse']:.4f}"
                if err
                else ""
            )
        )
    for set_name, entry in results.get("targettrack", {}).get("sets", {}).items():
        ratios = entry["median_isotropy_ratio"]
        typer.echo(
            f"targettrack {set_name}: isotropy {ratios['input_interpolated']:.3f} -> "
            f"{ratios['selfnet']:.3f} ({entry['nuclei_measured']} nucleus measurements)"
        )
