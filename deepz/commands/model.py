"""`deepz simulate stacks`, `deepz train`, `deepz evaluate`: Deep-Z focal stacks, training and evaluation."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from deepz.data_paths import TARGETTRACK_HELP, targettrack_dir
from deepz.results import results_file


app = typer.Typer()
"""The model commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The model benches; deepz.cli merges them into `deepz bench`."""

simulate = typer.Typer()
"""The model data sets; deepz.cli merges them into `deepz simulate`."""


@simulate.command("stacks")
def simulate_stacks(
    n: int = typer.Option(8, "--n", help="Number of worms (one focal stack each)."),
    out: Path = typer.Option(..., "--out", help="Output Zarr store, e.g. stacks.zarr."),
    seed: int = typer.Option(0, "--seed", help="Seed: worm i uses simulator seed seed*1000+i."),
    shape: tuple[int, int] = typer.Option((256, 256), "--shape", help="Frame (H W) in pixels."),
    z_min: float = typer.Option(-13.0, help="Lowest focus (um)."),
    z_max: float = typer.Option(13.0, help="Highest focus (um)."),
    z_step: float = typer.Option(0.5, help="Focus step (um)."),
    confocal: bool = typer.Option(False, "--confocal", help="Also render confocal targets."),
    sim_config: Optional[Path] = typer.Option(None, "--sim-config", help="Simulator TOML."),
) -> None:
    """Render simulated focal stacks (noisy input, clean targets, ground-truth nuclei) for training/eval."""
    import numpy as np

    from deepz.lab.sim_stacks import render_stacks

    z = np.arange(z_min, z_max + z_step / 2, z_step).tolist()
    path = render_stacks(out, n=n, seed=seed, shape=shape, z_um=z, confocal=confocal, sim_config=sim_config)
    typer.echo(f"wrote {n} stacks of {len(z)} planes to {path}")


@app.command("train")
def train_cmd(
    config: Path = typer.Option(..., "--config", help="Recipe TOML, or a shipped one (train-sim)."),
    target: Optional[str] = typer.Option(None, "--target", help="widefield or confocal (cross-modality)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the last checkpoint (any device)."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help="Override the recipe's out_dir."),
    device: Optional[str] = typer.Option(None, "--device", help="cpu, cuda or auto (default: the recipe's)."),
    compile_nets: bool = typer.Option(False, "--compile", help="torch.compile the networks."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Override train.steps (e.g. a short check)."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field: KEY=VALUE "
                                                  "in TOML syntax, e.g. data.render.shape=[64, 64]."),
) -> None:
    """Train a Deep-Z model on focal stacks (rendered by the simulator first if missing) or on worms
    rendered on the fly ([data.render]); with an [evaluate] table, score it on held-out worms into its
    manifest."""
    from infer.device import resolve_device
    from deepz.config import ConfigError, config_path
    from deepz.training import train_model
    from infer.train_config import TrainConfig

    cfg = TrainConfig.from_toml(config_path(config))
    updates: dict = {}
    if target:
        updates |= {"target": target, "name": f"{cfg.name}-{target}", "export_dir": None,
                    "out_dir": f"{cfg.out_dir}-{target}"}
    if out_dir:
        updates["out_dir"] = str(out_dir)
    cfg = TrainConfig.model_validate(cfg.model_dump() | updates)
    try:
        cfg = cfg.with_overrides((overrides or []) + ([f"train.steps={steps}"] if steps is not None else [])
                                 + (["train.compile=true"] if compile_nets else []))
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    run_device = resolve_device(device or cfg.train.device)
    sim = cfg.data.simulate
    if cfg.data.stacks is not None and sim is not None:
        stacks = Path(cfg.data.stacks)
        needs_confocal = cfg.target == "confocal"
        if not stacks.exists() or (needs_confocal and not (stacks / "confocal").exists()):
            import numpy as np

            from deepz.lab.sim_stacks import render_stacks

            if needs_confocal:
                stacks = stacks.with_name(stacks.stem + "-confocal.zarr")
                cfg = TrainConfig.model_validate(cfg.model_dump() | {
                    "data": cfg.data.model_dump() | {"stacks": str(stacks)}})
            if not stacks.exists():
                z = np.arange(sim.z_min_um, sim.z_max_um + sim.z_step_um / 2, sim.z_step_um).tolist()
                render_stacks(stacks, n=sim.n, seed=sim.seed, shape=sim.shape, z_um=z,
                              confocal=sim.confocal or needs_confocal)
    model_dir = train_model(cfg, device=run_device, resume=resume)
    typer.echo(f"model written to {model_dir}" + (f" and {cfg.export_dir}" if cfg.export_dir else ""))
    if cfg.evaluate is not None:
        from deepz.lab.model_eval import store_evaluation, summary_lines
        from deepz.lab.sim_stacks import evaluate_held_out

        held_out = cfg.evaluate
        results = evaluate_held_out(model_dir, seed=held_out.seed, n=held_out.n, shape=held_out.shape)
        for folder in [model_dir] + ([Path(cfg.export_dir)] if cfg.export_dir else []):
            store_evaluation(folder, results)
        for line in summary_lines(results):
            typer.echo(line)


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Argument(..., help="Model directory (weights.safetensors + manifest.json)."),
    stacks: Optional[Path] = typer.Option(None, "--stacks", help="Held-out stacks (deepz simulate stacks)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Render fresh held-out worms with this seed."),
    n: int = typer.Option(4, "--n", help="Worms to render with --seed."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
    plots: Optional[Path] = typer.Option(None, "--plots", help="Folder for evaluation plots."),
    targettrack: bool = typer.Option(False, "--targettrack", help="Also image the real targettrack "
                                     "neuron arrangements through the simulated optics and score them."),
    targettrack_path: Optional[Path] = typer.Option(None, "--targettrack-dir", help=TARGETTRACK_HELP),
    update_manifest: bool = typer.Option(False, "--update-manifest",
                                         help="Store the results in the model's manifest.json."),
) -> None:
    """Score virtual planes against true planes (PSNR/SSIM/r, baselines) and neurons (F1, axial error).

    The JSON is written also when the run fails or is interrupted, with what it has ("complete": false).
    """
    import tempfile

    from deepz.lab.model_eval import evaluate, store_evaluation, summary_lines
    from deepz.lab.scaffold import seed_or_path
    from deepz.lab.sim_stacks import model_planes, neuron_detector, render_held_out, render_targettrack
    from infer.model_io import load_model

    seed_or_path(stacks, seed, path_flag="--stacks")
    real_data = targettrack_dir(targettrack_path) if targettrack else None  # before minutes of scoring
    loaded = load_model(model)
    z = model_planes(loaded)
    with results_file(json_out) as results, tempfile.TemporaryDirectory() as tmp:
        results["command"] = {"stacks": str(stacks) if seed is None else None, "seed": seed, "n": n}
        if seed is not None:
            stacks = render_held_out(loaded, Path(tmp) / "held_out.zarr", seed=seed, n=n)
        results.update(evaluate(loaded, stacks, detector=neuron_detector(), plots_dir=plots))
        if real_data is not None:
            tt = render_targettrack(Path(tmp) / "targettrack.zarr", z_um=z, root=real_data)
            results["targettrack"] = evaluate(loaded, tt, detector=neuron_detector(),
                                              plots_dir=plots / "targettrack" if plots else None)
    for line in summary_lines(results) + (summary_lines(results["targettrack"]) if targettrack else []):
        typer.echo(line)
    if update_manifest:
        store_evaluation(model, results)


@bench.command("train")
def bench_train_cmd(
    json_out: Path = typer.Option(..., "--json", help="Write the measurements as JSON here."),
    devices: Optional[list[str]] = typer.Option(None, "--device", help="cpu or cuda (repeatable; default: "
                                                "every one this machine has)."),
    steps: int = typer.Option(20, "--steps", help="Timed steps per model and mode."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed steps first."),
    recipe: Path = typer.Option(Path("train-gpu"), "--recipe", help="Recipe TOML, or a shipped one."),
    overrides: Optional[list[str]] = typer.Option(None, "--set", help="Override a recipe field: KEY=VALUE "
                                                  "(e.g. train.batch=8 for a CPU-sized run)."),
    models: Optional[list[str]] = typer.Option(None, "--model", help="Generator BASExDEPTHxMAX channels, "
                                               "e.g. 16x4x128 (repeatable; default: the recipe's and 32x5x512)."),
) -> None:
    """Training step rate with on-device data (full step) vs pre-made batches, per device and model.

    The JSON is written also when the run fails or is interrupted, with what it has ("complete": false).
    """
    import torch

    from deepz.lab.engine_bench import environment
    from deepz.lab.train_bench import bench_train
    from infer.device import resolve_device
    from deepz.config import ConfigError, config_path
    from infer.train_config import ModelSection, TrainConfig

    cfg = TrainConfig.from_toml(config_path(recipe))  # a missing recipe is a ConfigError (one line)
    try:
        cfg = cfg.with_overrides(overrides or [])
    except ValueError as exc:
        raise ConfigError(str(exc).splitlines()[0]) from None
    try:
        sizes = [[int(v) for v in m.lower().split("x")] for m in models or []]
        archs = [ModelSection(base_channels=b, depth=d, max_channels=c, norm=cfg.model.norm) for b, d, c in sizes]
    except ValueError as exc:
        raise ConfigError(f"--model: write BASExDEPTHxMAX, e.g. 16x4x128 ({exc})") from None
    names = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    for name in names:
        resolve_device(name)  # before any work: a missing GPU is a one-line error
    with results_file(json_out) as results:
        results["command"] = {"recipe": str(recipe), "set": overrides or [], "devices": names}
        results["environment"] = environment(resolve_device(names[-1]))
        results.update(bench_train(cfg, names, steps=steps, warmup=warmup, models=archs or None))
    for dev, entry in results["devices"].items():
        for m in entry["models"]:
            arch = m["model"]
            typer.echo(f"{dev} {arch['base_channels']}c-d{arch['depth']}: full {m['full_steps_per_s']:.2f} "
                       f"steps/s, pre-made {m['random_steps_per_s']:.2f} steps/s, ratio "
                       f"{m['ratio_full_to_random']:.2f}, batch drawing {m['sampling_ms_per_batch']:.1f} ms")
