"""`deepz simulate pairs` and `deepz evaluate-superres`: cross-modality super-resolution data and scores.

Training runs through `deepz train --config configs/train-superres.toml` (task = "superres").
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deepz.config import ConfigError
from deepz.results import results_file


app = typer.Typer()
"""The super-resolution commands; deepz.cli merges them into `deepz`."""

simulate = typer.Typer()
"""The super-resolution data sets; deepz.cli merges them into `deepz simulate`."""


@simulate.command("pairs")
def simulate_pairs(
    kind: str = typer.Option("na", "--kind", help="na: 10x/0.4 NA (0.65 um px) -> 20x/0.75 NA (0.325 um); "
                             "confocal: wide-field -> confocal on the same grid."),
    n: int = typer.Option(8, "--n", help="Number of worms."),
    seed: int = typer.Option(0, "--seed", help="Seed: worm i uses simulator seed seed*1000+i."),
    out: Path = typer.Option(..., "--out", help="Output Zarr store, e.g. pairs.zarr."),
    shape: tuple[int, int] = typer.Option((256, 256), "--shape", help="Target frame (H W) in pixels."),
    planes: int = typer.Option(3, "--planes", help="Focus planes per worm."),
    focus_range: float = typer.Option(4.0, "--focus-range", help="Focus drawn within +/- this (um)."),
    bead_every: int = typer.Option(0, "--bead-every", help="Every k-th worm carries 0.2 um beads in place "
                                   "of nuclei (1 = beads only, 0 = none)."),
    sim_config: Optional[Path] = typer.Option(None, "--sim-config", help="Simulator TOML of the target "
                                              "microscope (default: 20x/0.75 NA)."),
) -> None:
    """Render registered (low-resolution input, high-resolution target) pairs with ground-truth nuclei."""
    from acquire.sim import SimConfig
    from deepz.lab.sim_pairs import render_pairs
    from infer.superres.pairs import MODALITY

    if kind not in MODALITY:
        raise ConfigError(f"--kind must be one of {', '.join(MODALITY)}, got {kind!r}")
    path = render_pairs(out, kind=kind, n=n, seed=seed, shape=shape, planes_per_worm=planes,
                        focus_range_um=focus_range, bead_every=bead_every,
                        sim_config=SimConfig.from_toml(sim_config) if sim_config else None)
    typer.echo(f"wrote {n * planes} {kind} pairs to {path}")


@app.command("evaluate-superres")
def evaluate_superres_cmd(
    model: Path = typer.Argument(..., help="Super-resolution model directory."),
    pairs: Optional[Path] = typer.Option(None, "--pairs", help="Held-out pairs (deepz simulate pairs)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Render fresh held-out worms with this seed."),
    n: int = typer.Option(4, "--n", help="Worms to render with --seed (3 focus planes each), with nuclei "
                          "and again with 0.2 um beads in their place."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for the example-image PNG."),
    update_manifest: bool = typer.Option(False, "--update-manifest",
                                         help="Store the results in the model's manifest.json."),
) -> None:
    """Score a super-resolution model, bicubic upsampling and Richardson-Lucy against the true images.

    The JSON is written also when the run fails or is interrupted, with what it has ("complete": false).
    """
    import tempfile

    from deepz.lab.model_eval import store_evaluation
    from deepz.lab.scaffold import seed_or_path
    from deepz.lab.sim_pairs import render_pairs
    from deepz.lab.superres_eval import evaluate_superres, summary_lines
    from infer.model_io import load_model
    from infer.superres.pairs import open_pairs

    seed_or_path(pairs, seed, path_flag="--pairs")
    loaded = load_model(model)
    kind = loaded.manifest.details.get("pair")
    modality = loaded.manifest.modality
    if seed is not None and kind not in ("na", "confocal"):
        raise ConfigError(f"model {model} was not trained on simulated pairs (pair {kind!r}); "
                          "pass --pairs with registered pairs of its kind.")
    with results_file(json_out) as results, tempfile.TemporaryDirectory() as tmp:
        results["command"] = {"pairs": str(pairs) if seed is None else None, "seed": seed,
                              "n_worms": n if seed is not None else None}
        if seed is not None:
            pairs = render_pairs(Path(tmp) / "held_out.zarr", kind=kind, n=n, seed=seed)
            beads = render_pairs(Path(tmp) / "beads.zarr", kind=kind, n=n, seed=seed, bead_every=1)
        results.update(evaluate_superres(loaded, open_pairs(pairs, modality=modality), plots_dir=plots))
        if seed is not None:
            results["beads"] = evaluate_superres(loaded, open_pairs(beads, modality=modality),
                                                 plots_dir=plots / "beads" if plots else None)
    lines = summary_lines(results)
    if "beads" in results:
        lines += ["beads:", *summary_lines(results["beads"])]
    typer.echo("\n".join(lines))
    if update_manifest:
        store_evaluation(model, results)
