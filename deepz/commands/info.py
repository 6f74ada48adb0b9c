"""`deepz info`: versions, compute devices, available engines and the effective configuration."""

from __future__ import annotations

import json
from pathlib import Path

import typer


app = typer.Typer()
"""The info commands; deepz.cli merges them into `deepz`."""


@app.command()
def info(
    config: Path = typer.Option(None, "--config", help="Run config TOML to show, with defaults filled in."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Print versions, devices (GPU, engines available) and the effective run configuration."""
    import torch

    from deepz.config import load_config
    from deepz.wiring import software_versions
    from infer.engine import ENGINE_NAMES, engine_unavailable_reason, resolve_device
    from infer.model_io import default_model_path, load_manifest

    cfg = load_config(config)
    device = resolve_device(None if cfg.inference.device == "auto" else cfg.inference.device)
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    engines = {}
    for name in ENGINE_NAMES:
        reason = engine_unavailable_reason(name, device)
        engines[name] = "available" if reason is None else f"unavailable: {reason}"
    model_path = cfg.inference.model or default_model_path()
    manifest = load_manifest(model_path)
    report = {
        "versions": software_versions(),
        "devices": {"inference_device": str(device), "cuda_gpus": gpus, "cpu_threads": torch.get_num_threads()},
        "engines": engines,
        "model": {"path": str(model_path), "name": manifest.name,
                  "axial_range_um": manifest.axial_range_um, "modality": manifest.modality},
        "config": cfg.model_dump(mode="json"),
    }
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for section, values in report.items():
        typer.secho(section, bold=True)
        for key, value in values.items():
            typer.echo(f"  {key}: {json.dumps(value) if isinstance(value, (dict, list)) else value}")
