"""`deepz evaluate-activity` and `deepz bench activity`: per-neuron activity readouts scored against the
simulator's truth, and the live readout's frame rate."""

from __future__ import annotations

import time
from pathlib import Path

import typer

from deepz.data_paths import TARGETTRACK_HELP, targettrack_dir
from deepz.results import results_file, write_json


app = typer.Typer()
"""The activity readout commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The activity readout benches; deepz.cli merges them into `deepz bench`."""


@app.command("evaluate-activity")
def evaluate_activity_cmd(
    seed: int = typer.Option(7, "--seed", help="Simulator seed (develop on 0-3, report on others)."),
    seconds: float = typer.Option(
        60.0, "--seconds", help="Simulated duration after the calibration scan (s)."
    ),
    rate: float = typer.Option(100.0, "--rate", help="Camera frame rate (Hz)."),
    json_path: Path = typer.Option(..., "--json", help="Write the scores to this JSON file."),
    size: int = typer.Option(256, "--size", help="Square camera frame (px)."),
    virtual_every: int = typer.Option(
        50, "--virtual-every", help="Deep-Z volume every N frames (CPU cost); 0 skips the Deep-Z methods."
    ),
    targettrack: bool = typer.Option(
        False, "--targettrack", help="Real targettrack neuron arrangements instead of the seeded worm."
    ),
    targettrack_path: Path = typer.Option(None, "--targettrack-dir", help=TARGETTRACK_HELP),
    device: str = typer.Option(
        "cpu", "--device", help="torch device of the readout and Deep-Z (cpu, cuda)."
    ),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)."),
    recalibrate_s: float = typer.Option(
        5.0, "--recalibrate-s", min=0.0, help="Re-scan every this many camera seconds (0 = never)."
    ),
    drift_um: float = typer.Option(
        0.0, "--drift-um", min=0.0, help="Re-scan when the neurons moved this far (um; 0 = never)."
    ),
    method: list[str] = typer.Option(
        None, "--method", help="Score only this method (repeat; default: all): demix, virtual-sample, "
        "virtual-detect, zscan.",
    ),
    bleach_half_life_s: float = typer.Option(
        0.0, "--bleach-half-life", min=0.0, help="Bleach the simulated nuclei with this half-life (s; 0 = "
        "none): does each method's dF/F baseline follow it?",
    ),
    oracle_every: int = typer.Option(
        0, "--oracle-bound", min=0, help="Also score the oracle bound (the simulator's own stamps at the "
        "true positions, demixed) on every Nth frame, as 'oracle_bound' (0 = not).",
    ),
    oracle_error_um: float = typer.Option(
        0.0, "--oracle-position-error", min=0.0, help="The oracle bound's stamps placed this far (um, "
        "median) from the true positions, drawn afresh every re-scan interval: how precisely a method must "
        "follow.",
    ),
) -> None:
    """Score every activity method (demix readout, Deep-Z sampling, Deep-Z detection, mechanical z-scan)
    on a simulated run: traced fraction, trace r, position error, identity switches.

    The JSON is written also when the run is interrupted, with what it has ("complete": false).
    """
    import torch
    from tqdm import tqdm

    from deepz.lab.activity_bound import oracle_bound
    from deepz.lab.activity_eval import DEFAULT_METHOD, METHODS, ActivityRunConfig, evaluate_activity
    from deepz.lab.activity_run import TARGETTRACK_EXAMPLES, simulated_worm, targettrack_worm
    from deepz.lab.activity_score import summarise
    from deepz.lab.scaffold import machine

    unknown = sorted(set(method or []) - set(METHODS))
    if unknown:
        choices = ", ".join(METHODS)
        raise typer.BadParameter(f"unknown {unknown}; choose from {choices}", param_hint="--method")
    methods = tuple(method or METHODS)
    if threads > 0:
        torch.set_num_threads(threads)
    root = targettrack_dir(targettrack_path) if targettrack else None  # checked before minutes of work
    cfg = ActivityRunConfig(
        seconds=seconds, rate_hz=rate, virtual_every=virtual_every, device=device,
        recalibrate_s=recalibrate_s, drift_um=drift_um or None,
    )  # fmt: skip
    specimens = (
        [(ex, lambda ex=ex: targettrack_worm(root, ex, seed, size, bleach_half_life_s))
         for ex in TARGETTRACK_EXAMPLES]
        if root is not None
        else [(f"seed {seed}", lambda: simulated_worm(seed, size, bleach_half_life_s))]
    )
    start = time.perf_counter()
    parts: dict[str, list] = {}
    bounds: list = []
    with results_file(json_path) as result:
        result.update(
            seed=seed, size=size, specimen="targettrack" if targettrack else "simulated worm",
            bleach_half_life_s=bleach_half_life_s, default=DEFAULT_METHOD, machine=machine(), runs={},
            methods={},
        )  # fmt: skip
        for name, make in specimens:
            with tqdm(total=cfg.n_frames, desc=f"activity {name}", unit="frame") as bar:
                scores, info = evaluate_activity(
                    make(), cfg, progress=lambda done: bar.update(done - bar.n), methods=methods
                )
            per_method = {m: summarise([s]) for m, s in scores.items()}
            result["runs"][name] = {"info": info, "methods": per_method}
            for m, s in scores.items():
                parts.setdefault(m, []).append(s)
            result["methods"] = {m: summarise(p) for m, p in parts.items()}
            result["wall_seconds"] = time.perf_counter() - start
            if info["interrupted"]:
                raise KeyboardInterrupt("interrupted; the scores cover the frames done")
            if oracle_every > 0:
                with tqdm(total=cfg.n_frames, desc=f"oracle bound {name}", unit="frame") as bar:
                    bound = oracle_bound(make(), cfg, every=oracle_every, lateral_error_um=oracle_error_um,
                                         progress=lambda done: bar.update(done - bar.n))  # fmt: skip
                bounds.append(bound)
                result["runs"][name]["oracle_bound"] = summarise([bound])
                result["oracle_bound"] = {
                    **summarise(bounds), "every_frames": oracle_every, "lateral_error_um": oracle_error_um,
                    "note": "not a method: every neuron demixed per frame with the simulator's own stamps at "
                    "its true position (reads the truth), or lateral_error_um from it; what the physics "
                    "leaves within reach",
                }  # fmt: skip
                result["wall_seconds"] = time.perf_counter() - start
    for m, s in result["methods"].items():
        typer.echo(
            f"{m:15s} traced {s['traced_fraction']:.3f}  median r {s['median_r']:.3f}  "
            f"r>=0.9 {s['fraction_r_ge_0_9']:.3f}  "
            f"position error {s['position_error_median_um']:.2f} um  "
            f"switches/neuron-min {s['switches_per_neuron_minute']:.3f}"
        )
    if "oracle_bound" in result:
        b = result["oracle_bound"]
        typer.echo(f"{'oracle bound':15s} median r {b['median_r']:.3f}  r>=0.9 {b['fraction_r_ge_0_9']:.3f}")
    typer.echo(f"results in {json_path}")


@bench.command("activity")
def bench_activity(
    json_path: Path = typer.Option(..., "--json", help="Write the results to this JSON file."),
    device: list[str] = typer.Option(
        None, "--device", help="Devices (repeat; default: cpu and cuda if any)."
    ),
    size: int = typer.Option(512, "--size", help="Square camera frame (px)."),
    neurons: int = typer.Option(200, "--neurons", help="Neurons in the simulated worm."),
    frames: int = typer.Option(100, "--frames", help="Frames read per device (the first is not timed)."),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)."),
) -> None:
    """Frames/s of the live readout (motion + demixing of every reference neuron) per device."""
    import torch

    from deepz.lab.activity_bench import run_activity_bench
    from infer.device import resolve_device

    for name in device or []:
        resolve_device(name)  # before any work: a device that is not there is a one-line error
    if threads > 0:
        torch.set_num_threads(threads)
    results = run_activity_bench(size=size, neurons=neurons, frames=frames, devices=device or None)
    write_json(json_path, results)
    for name, r in results["results"].items():
        if "frames_per_s_median" in r:
            rate_s = r["frames_per_s_median"]
            typer.echo(f"{name}: {rate_s:.1f} frames/s ({r['neurons_in_reference']} neurons)")
        else:
            typer.echo(f"{name}: {r['skipped']}")
    typer.echo(f"results in {json_path}")
