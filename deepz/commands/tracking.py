"""`deepz track`, `deepz evaluate-tracking`, `deepz bench track`: offline tracking, scoring and throughput."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import typer

from deepz.data_paths import TARGETTRACK_HELP, targettrack_dir
from deepz.offline_tracking import track_recording
from deepz.results import check_writable, results_file, write_json


app = typer.Typer()
"""The tracking commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The tracking benches; deepz.cli merges them into `deepz bench`."""


@app.command("track")
def track(
    recording: Path = typer.Argument(..., help="Recording (REC.zarr) with stored volumes."),
    out: Path = typer.Option(None, "--out", help="New store for the tracks (default: REC.tracks.zarr)."),
    max_distance_um: float = typer.Option(2.0, help="Largest link distance between volumes (um)."),
    max_gap: int = typer.Option(20, help="Longest gap (volumes) a track may bridge."),
    device: str | None = typer.Option(
        None, help="torch device for detection (cpu, cuda; default: input's)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output store."),
    cluster: str = typer.Option(None, "--cluster", help="Detect on a Dask cluster: local[:N] workers, or a "
                                "scheduler address tcp://host:8786 (linking stays in this process)."),
) -> None:
    """Re-detect neurons in every stored volume and re-link them globally (offline, gap closing)."""
    out = out or recording.with_name(recording.name.removesuffix(".zarr") + ".tracks.zarr")
    summary = track_recording(
        recording,
        out,
        max_distance_um=max_distance_um,
        max_gap=max_gap,
        device=device,
        overwrite=overwrite,
        cluster=cluster,
    )
    typer.echo(f"{summary['tracks']} tracks over {summary['volumes']} volumes written to {out}")


@app.command("evaluate-tracking")
def evaluate_tracking(
    seed: int = typer.Option(0, "--seed", help="Simulator seed."),
    json_path: Path = typer.Option(..., "--json", help="Write the scores to this JSON file."),
    seconds: float = typer.Option(60.0, "--seconds", help="Simulated duration (s)."),
    rate: float = typer.Option(100.0, "--rate", help="Volume rate (Hz)."),
    virtual: bool = typer.Option(
        False, "--virtual", help="Deep-Z volumes from one frame (shipped model)."
    ),
    planes: int = typer.Option(32, "--planes", help="Planes per volume over z -10..10 um."),
    frame_size: int = typer.Option(0, "--frame-size", help="Square camera frame (px); 0 = simulator's."),
    detect_every: int = typer.Option(
        1, "--detect-every", help="Full detection every N volumes, else refine."
    ),
    targettrack: Path = typer.Option(None, "--targettrack-dir", help=TARGETTRACK_HELP),
    skip_targettrack: bool = typer.Option(
        False, "--skip-targettrack", help="Score the simulated run only."
    ),
) -> None:
    """Score detection, identities and traces on a simulated run (and on real annotated worm volumes).

    The JSON is written also when the run fails or is interrupted, with what it has ("complete": false).
    """
    from tqdm import tqdm

    from deepz.lab.scaffold import machine
    from deepz.lab.track_eval import RunConfig, evaluate_run
    from track.targettrack import evaluate_targettrack

    real_data = None if skip_targettrack else targettrack_dir(targettrack)  # before minutes of simulation
    cfg = RunConfig(
        seed=seed,
        seconds=seconds,
        rate_hz=rate,
        planes=planes,
        virtual=virtual,
        detect_every=detect_every,
        frame_shape=(frame_size, frame_size) if frame_size else None,
    )
    start = time.perf_counter()
    with results_file(json_path) as result:
        result.update(run=asdict(cfg), volumes_done=0, machine=machine())
        if real_data is not None:
            result["targettrack"] = evaluate_targettrack(real_data)
        with tqdm(total=cfg.n_volumes, desc="track", unit="vol") as bar:

            def progress(done: int, _total: int) -> None:
                bar.update(done - bar.n)
                result.update(volumes_done=done, wall_seconds=time.perf_counter() - start)

            result.update(evaluate_run(cfg, progress=progress))
        result["wall_seconds"] = time.perf_counter() - start
    s = result["score"]
    typer.echo(
        f"detection F1 {s['detection']['f1']:.3f}; "
        f"switches/neuron-min {s['switches_per_neuron_minute']:.3f}; "
        f"tracked end to end {s['fraction_tracked_end_to_end']:.3f} "
        f"({s['notes']['fraction_tracked_end_to_end_resolvable']:.3f} of the "
        f"{s['n_neurons'] - s['notes']['neurons_with_unresolvable_neighbour']} neurons never closer to another "
        "than the optical resolution); "
        f"median trace r {s['median_trace_r']:.3f}"
    )
    if "targettrack" in result:
        tt = result["targettrack"]
        typer.echo(
            f"targettrack: detection F1 {tt['detection']['f1']:.3f}; correspondence accuracy "
            f"{tt['correspondence_accuracy']:.3f}"
        )
    typer.echo(f"results in {json_path}")


@bench.command("track")
def bench_track(
    json_path: Path = typer.Option(..., "--json", help="Write the results to this JSON file."),
    volumes: int = typer.Option(10, "--volumes", help="Timed calls per stage (median reported)."),
    neurons: int = typer.Option(200, "--neurons", help="Neurons per volume."),
    device: list[str] = typer.Option(
        None, "--device", help="Devices (repeat; default: cpu and cuda if any)."
    ),
    threads: int = typer.Option(0, "--threads", help="torch CPU threads (0 = torch's default)."),
) -> None:
    """Volumes/s of detection, windowed refinement, linking and activity for 32x512x512 volumes."""
    import torch

    from deepz.lab.track_bench import run_track_bench
    from infer.device import resolve_device

    for name in device or []:
        resolve_device(name)  # before any work: a device that is not there is a one-line error
    check_writable(json_path)
    if threads > 0:
        torch.set_num_threads(threads)

    results = run_track_bench(volumes=volumes, neurons=neurons, devices=device or None)
    write_json(json_path, results)
    for name, r in results["results"].items():
        rates = ", ".join(f"{k} {v:.1f}" for k, v in r["volumes_per_s"].items())
        live = ", ".join(f"{k} {v:.1f}" for k, v in r["live_tracker_volumes_per_s"].items())
        typer.echo(f"{name}: volumes/s {rates}; live tracker {live}")
    typer.echo(f"results in {json_path}")
