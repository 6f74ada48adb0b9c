"""`deepz replay --cluster ...` (its command-line side) and `deepz bench replay`: replay on a Dask cluster."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import typer

from deepz.config import RunConfig


def replay_cli(cfg: RunConfig, recording: Path, cluster: str) -> None:
    """Replay on the cluster named by ``cluster`` with progress bars, then print where the result is."""
    from tqdm import tqdm

    from deepz.cluster.connect import connect, describe, local_torch_threads, parse_cluster
    from deepz.cluster.replay import replay_on_cluster
    from storage.region_writer import VolumeRegions

    spec = parse_cluster(cluster)
    threads = local_torch_threads(spec.local_workers()) if spec.local else None
    with contextlib.ExitStack() as bars, connect(spec) as client:
        typer.echo(describe(client), err=True)
        copy_bar = compute_bar = None

        def copied(n: int, total: int) -> None:
            nonlocal copy_bar
            if copy_bar is None:
                copy_bar = bars.enter_context(tqdm(total=total, unit="frame", desc="copy raw frames",
                                                   dynamic_ncols=True))  # fmt: skip
            copy_bar.update(n - copy_bar.n)
            if n == total:
                copy_bar.close()

        def planned(regions: VolumeRegions) -> None:
            nonlocal compute_bar
            pending = regions.pending()
            done = len(regions.regions) - len(pending)
            desc = f"replay {recording.name}" + (f" (resumed: {done} regions were done)" if done else "")
            compute_bar = bars.enter_context(tqdm(total=sum(r.stop - r.start for r in pending), unit="frame",
                                                  desc=desc, dynamic_ncols=True))  # fmt: skip

        try:
            summary = replay_on_cluster(
                cfg, recording, client, torch_threads=threads, on_copy=copied, on_plan=planned,
                on_region=lambda done: compute_bar.update(done.region.stop - done.region.start),
            )  # fmt: skip
        except KeyboardInterrupt:
            bars.close()
            typer.secho(f"stopped: {cfg.recording.out} is unfinished; run the same command again to compute only "
                        "the regions still missing", err=True, fg=typer.colors.YELLOW)  # fmt: skip
            raise typer.Exit(130) from None
    out = cfg.recording.out
    rate = summary["frames_per_s"]
    typer.echo(
        f"replayed {summary['frames']} frames of {recording} on {summary['workers']} Dask workers "
        f"({', '.join(summary['engines']) or 'nothing left to compute'}): {summary['regions_computed']} of "
        f"{summary['regions']} regions computed in {summary['compute_s']:.1f} s"
        + (f" ({rate:.2f} frames/s)" if rate else "") + f", {summary['elapsed_s']:.1f} s in all."
    )
    typer.echo(f"recording: {out} ({summary['frames']} frames, {summary['volumes']} volumes)")
    typer.echo(f"view it:   deepz view {out}")


def register(app: typer.Typer, bench: typer.Typer) -> None:
    @bench.command("replay")
    def bench_replay(
        cluster: str = typer.Option("local:1,2", "--cluster", help="Local worker counts to compare, e.g. local:1,2."),
        json_out: Path = typer.Option(..., "--json", help="Write the results here."),
        frames: int = typer.Option(48, "--frames", help="Frames in the synthetic recording replayed."),
        size: int = typer.Option(128, "--size", help="Frame side in pixels."),
        planes: int = typer.Option(8, "--planes", help="Planes K per volume."),
        engine: str = typer.Option("torch", "--engine"),
        model: Path = typer.Option(None, "--model", help="Model directory (default: the shipped model)."),
    ) -> None:
        """Replay frames/s on local Dask clusters of each worker count, beside single-process replay."""
        from deepz.cluster.bench import bench_replay as run_bench
        from deepz.cluster.connect import ClusterError

        counts = cluster.removeprefix("local:").split(",")
        if not cluster.startswith("local:") or not all(c.isdigit() and int(c) > 0 for c in counts):
            raise ClusterError(f"--cluster {cluster!r}: the bench compares local clusters, e.g. local:1,2")
        result = run_bench([int(c) for c in counts], frames=frames, size=size, planes=planes, engine=engine,
                           model=model)  # fmt: skip
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        typer.echo(json.dumps(result["summary"], indent=2))
        typer.echo(f"wrote {json_out}")
