"""`deepz replay --cluster ...` (its command-line side), `deepz replay-batch` and `deepz bench replay`: replay on a
Dask cluster."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from deepz.commands import pipeline as opts
from deepz.config import RunConfig
from deepz.signals import stop_on_signals


def _interrupt(signal_name: str) -> None:
    """SIGTERM (a process manager, `docker stop`) stops a cluster replay as Ctrl-C does: resumable."""
    raise KeyboardInterrupt(signal_name)


def cluster_tracking(track: bool | None) -> bool:
    """Tracking for a cluster replay: off unless asked (linking runs volume after volume, in one process)."""
    if track is None:
        typer.echo("tracking: off on a cluster; track the new store with `deepz track NEW.zarr --cluster ...`",
                   err=True)
        return False
    return track


def replay_cli(cfg: RunConfig, recording: Path, cluster: str) -> None:
    """`deepz replay REC --cluster ...`: one recording on the cluster named by ``cluster``."""
    _replay_runs([(cfg, recording)], cluster)


def _replay_runs(runs: list[tuple[RunConfig, Path]], cluster: str) -> None:
    """Replay each (config, recording) on the cluster named by ``cluster`` with progress bars, then say where
    the results are."""
    from tqdm import tqdm

    from deepz.cluster.connect import connect, describe, local_torch_threads, parse_cluster
    from deepz.cluster.replay import replay_batch_on_cluster
    from storage.region_writer import VolumeRegions

    spec = parse_cluster(cluster)
    threads = local_torch_threads(spec.local_workers()) if spec.local else None
    with contextlib.ExitStack() as bars, stop_on_signals(_interrupt), connect(spec) as client:
        typer.echo(describe(client), err=True)
        copy_bars: dict[Path, tqdm] = {}
        compute_bar = None

        def copied(recording: Path, n: int, total: int) -> None:
            if recording not in copy_bars:
                copy_bars[recording] = bars.enter_context(
                    tqdm(total=total, unit="frame", desc=f"copy {recording.name}", dynamic_ncols=True))
            copy_bars[recording].update(n - copy_bars[recording].n)
            if n == total:
                copy_bars[recording].close()

        def planned(plans: list[VolumeRegions]) -> None:
            nonlocal compute_bar
            pending = [r for plan in plans for r in plan.pending()]
            done = sum(len(plan.regions) for plan in plans) - len(pending)
            desc = "replay " + (runs[0][1].name if len(runs) == 1 else f"{len(runs)} recordings")
            compute_bar = bars.enter_context(tqdm(
                total=sum(r.stop - r.start for r in pending), unit="frame", dynamic_ncols=True,
                desc=desc + (f" (resumed: {done} regions were done)" if done else "")))  # fmt: skip

        try:
            summaries = replay_batch_on_cluster(
                runs, client, torch_threads=threads, on_copy=copied, on_plan=planned,
                on_region=lambda done: compute_bar.update(done.region.stop - done.region.start),
            )  # fmt: skip
        except KeyboardInterrupt:
            bars.close()
            typer.secho("stopped: the unfinished stores are resumed by running the same command again (only the "
                        "regions still missing are computed)", err=True, fg=typer.colors.YELLOW)  # fmt: skip
            raise typer.Exit(130) from None
    for summary in summaries:
        rate = summary["frames_per_s"]
        typer.echo(
            f"replayed {summary['frames']} frames of {summary['recording']} on {summary['workers']} Dask workers "
            f"({', '.join(summary['engines']) or 'nothing left to compute'}): {summary['regions_computed']} of "
            f"{summary['regions']} regions computed in {summary['compute_s']:.1f} s"
            + (f" ({rate:.2f} frames/s)" if rate else "") + f", {summary['elapsed_s']:.1f} s in all."
        )
        typer.echo(f"recording: {summary['out']} ({summary['frames']} frames, {summary['volumes']} volumes)")
        typer.echo(f"view it:   deepz view {summary['out']}")


app = typer.Typer()
"""The cluster replay commands; deepz.cli merges them into `deepz`."""

bench = typer.Typer()
"""The cluster replay benches; deepz.cli merges them into `deepz bench`."""


@app.command("replay-batch")
def replay_batch(
    recordings: list[Path] = typer.Argument(..., help="Recordings to replay (.zarr)."),
    out_dir: Path = typer.Option(..., "--out-dir", help="Directory for the new stores (NAME-replay.zarr)."),
    cluster: str = typer.Option("local", "--cluster", help="local[:N] workers, or a scheduler address "
                                "tcp://host:8786 (a re-run resumes unfinished stores)."),
    config: Path = opts.ConfigOpt,
    model: Path = opts.ModelOpt,
    planes: int = opts.PlanesOpt,
    z_range: tuple[float, float] = opts.ZRangeOpt,
    engine: str = opts.EngineOpt,
    volumes: str = opts.VolumesOpt,
    overwrite: bool = opts.OverwriteOpt,
    track: bool = opts.TrackOpt,
    allow_optics_mismatch: bool = opts.OpticsOpt,
) -> None:
    """Replay several recordings on a Dask cluster, every frame, into new stores in --out-dir.

    Each recording's inference settings default to those it was made with; all their regions share the
    workers.
    """
    from deepz.config import load_config

    runs = []
    for recording in recordings:
        out = out_dir / f"{recording.name.removesuffix('.zarr')}-replay.zarr"
        runs.append((load_config(config, base=opts._recorded_settings(recording), overrides=opts._overrides(
            inference__planes=planes, inference__z_range_um=z_range, inference__engine=engine,
            inference__model=model, recording__out=out, recording__volumes=volumes,
            recording__overwrite=overwrite, tracking__enabled=cluster_tracking(track), view=False,
            inference__allow_optics_mismatch=allow_optics_mismatch,
        )), recording))  # fmt: skip
    _replay_runs(runs, cluster)


@bench.command("replay")
def bench_replay(
    cluster: str = typer.Option("local:1,2", "--cluster", help="Local worker counts to compare."),
    json_out: Path = typer.Option(..., "--json", help="Write the results here."),
    frames: int = typer.Option(48, "--frames", help="Frames in the synthetic recording replayed."),
    size: int = typer.Option(128, "--size", help="Frame side in pixels."),
    planes: int = typer.Option(8, "--planes", help="Planes K per volume."),
    engine: str = typer.Option("torch", "--engine"),
    model: Path = typer.Option(None, "--model", help="Model directory (default: the shipped model)."),
    threads: int = typer.Option(1, "--threads-per-worker", min=1, help="Torch threads of every process."),
) -> None:
    """Replay frames/s on local Dask clusters of each worker count, beside single-process replay."""
    from deepz.cluster.bench import bench_replay as run_bench
    from deepz.cluster.connect import ClusterError
    from deepz.results import check_writable, write_json

    counts = cluster.removeprefix("local:").split(",")
    if not cluster.startswith("local:") or not all(c.isdigit() and int(c) > 0 for c in counts):
        raise ClusterError(f"--cluster {cluster!r}: the bench compares local clusters, e.g. local:1,2")
    check_writable(json_out)
    result = run_bench([int(c) for c in counts], frames=frames, size=size, planes=planes, engine=engine,
                       model=model, threads=threads)  # fmt: skip
    write_json(json_out, result)
    typer.echo(json.dumps(result["summary"], indent=2))
    typer.echo(f"wrote {json_out}")
