"""`deepz bench storage`: sustained recording write rates against the disk's own sequential speed."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from deepz.results import check_writable, write_json


bench = typer.Typer()
"""The storage benches; deepz.cli merges them into `deepz bench`."""


@bench.command("storage")
def bench_storage(
    json_path: Path = typer.Option(..., "--json", help="Write the results to this JSON file."),
    seconds: float = typer.Option(
        8.0, "--seconds", min=1.0, help="Seconds per measurement (disk, raw, volumes)."
    ),
    directory: Path | None = typer.Option(
        None, "--dir", help="Directory on the disk to measure (default: a temporary directory)."
    ),
    backends: list[str] = typer.Option(
        ["zarr", "tensorstore"], "--backend", help="Backends to compare (repeat the option)."
    ),
    compressions: list[str] = typer.Option(
        ["zstd", "lz4"], "--compression", help="Blosc compressors to compare (repeat the option)."
    ),
    rounds: int = typer.Option(2, "--rounds", help="Interleaved rounds; the best of them is reported."),
    ome_writers: bool = typer.Option(
        True, "--ome-writers/--no-ome-writers", help="Also time ome-writers on the same streams."
    ),
) -> None:
    """Raw (512x512 uint16 at 100 Hz) and volume (32x512x512) streams through RecordingWriter."""
    from deepz.lab.storage_bench import run_storage_bench

    check_writable(json_path)

    with tempfile.TemporaryDirectory(dir=directory, prefix="deepz-bench-storage-") as tmp:
        results = run_storage_bench(
            Path(tmp), seconds, tuple(backends), tuple(compressions), rounds, ome_writers=ome_writers
        )
    write_json(json_path, results)
    disk = results["disk_sequential_write_mb_s"]
    typer.echo(f"disk sequential write: {disk['start']} MB/s before, {disk['end']} MB/s after")
    for name, result in results["runs"].items():
        raw, volumes = result["raw"], result["volumes"]
        typer.echo(
            f"{name}: raw {raw['mb_per_s']} MB/s = {raw['x_real_time_100hz']}x real time; volumes "
            f"{volumes['mb_per_s']} MB/s = {volumes['fraction_of_disk']:.0%} of disk"
        )
    for name, result in results.get("ome_writers", {}).items():
        if name != "what":
            typer.echo(f"{name}: raw {result['raw']['mb_per_s']} MB/s, volumes {result['volumes']['mb_per_s']} MB/s")
    typer.echo(f"chosen: {results['chosen']}; results in {json_path}")
