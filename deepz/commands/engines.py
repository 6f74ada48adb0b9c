"""`deepz bench infer`: engine throughput, latency, memory and roofline, plus agreement checks, as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from deepz.results import check_writable, write_json


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


bench = typer.Typer()
"""The engine benches; deepz.cli merges them into `deepz bench`."""


@bench.command("infer")
def bench_infer(
    size: int = typer.Option(512, "--size", help="Frame size (square, pixels per side)."),
    planes: int = typer.Option(32, "--planes", help="Planes K per volume."),
    batch: int = typer.Option(1, "--batch", help="Frames B per engine call."),
    engine: str = typer.Option(
        "auto", "--engine", help="auto | torch | torch-opt | onnxruntime | tensorrt, optionally "
        ":precision (torch-opt:bfloat16); several separated by commas.",
    ),
    device: str = typer.Option(None, "--device", help="cpu | cuda (default: cuda when present)."),
    model: Path = typer.Option(None, "--model", help="Model directory (default: the shipped model)."),
    seconds: float = typer.Option(None, "--seconds", help="Timed seconds per point (10 GPU, 2 CPU)."),
    warmup: int = typer.Option(None, "--warmup", help="Untimed runs first (5 GPU, 1 CPU)."),
    compile_: bool = typer.Option(False, "--compile", help="torch-opt: torch.compile the generator."),
    sweep: bool = typer.Option(False, "--sweep", help="Sweep sizes x planes x engines, plot."),
    sizes: str = typer.Option("256,512,1024", "--sizes", help="Sweep frame sizes."),
    planes_list: str = typer.Option("16,32,41", "--planes-list", help="Sweep plane counts."),
    check: bool = typer.Option(False, "--check", help="Check each engine against the torch reference."),
    json_out: Path = typer.Option(None, "--json", help="Write the results here."),
    plot: Path = typer.Option(None, "--plot", help="Sweep plot PNG (default: beside --json)."),
) -> None:
    """Measure engines: planes/s, volumes/s, latency p50/p99, memory, TFLOP/s vs measured peak."""
    import torch

    from deepz.lab.engine_bench import plot_sweep, run_bench
    from infer.engine import EngineError, resolve_device

    dev = resolve_device(device)
    if json_out is not None:
        check_writable(json_out)
    names = [n.strip() for n in engine.split(",") if n.strip()]
    if seconds is None:
        seconds = 10.0 if dev.type == "cuda" else 2.0
    try:
        report = run_bench(
            names, _ints(sizes) if sweep else [size], _ints(planes_list) if sweep else [planes], batch,
            str(dev), model_path=model, seconds=seconds, warmup=warmup, check=check, compile=compile_,
        )
    except (EngineError, torch.OutOfMemoryError) as exc:
        typer.secho(f"error: {exc}", err=True, fg=typer.colors.RED)
        raise typer.Exit(2) from None
    for p in report["results"]:
        typer.echo(
            f"{p['spec']:<20} {p['device']:<6} {p['precision']:<9} {p['size']:>5}px K={p['planes']:<3} "
            f"B={p['batch']}  {p['volumes_per_s']:8.2f} vol/s  {p['planes_per_s']:9.1f} planes/s  "
            f"latency p50 {p['latency_ms']['p50']:8.1f} ms p99 {p['latency_ms']['p99']:8.1f} ms  "
            f"{p['achieved_tflops']:.3f} TFLOP/s = {100 * p['peak_fraction']:.1f}% of peak  "
            f"mem {p['device_memory_mb']:.0f} MiB"
        )
    for c in report.get("checks", []):
        errors = ", ".join(f"{k} {v:.2e}" for k, v in c["relative_error"].items())
        typer.echo(f"check {c['spec']:<20} {c['precision']:<9} relative error {errors} "
                   f"(tolerance {c['tolerance']:.0e}): {'ok' if c['passed'] else 'FAILED'}")
    if json_out is not None:
        write_json(json_out, report)
        typer.echo(f"wrote {json_out}")
    if sweep:
        png = plot or (json_out.with_suffix(".png") if json_out else Path("bench-infer-sweep.png"))
        typer.echo(f"wrote {plot_sweep(report, png)}")
    if not all(c["passed"] for c in report.get("checks", [])):
        raise typer.Exit(1)
