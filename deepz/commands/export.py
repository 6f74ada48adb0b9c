"""`deepz export`: a recording's tracks, traces and metadata as CSV or Parquet tables with units."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer


class TableFormat(str, Enum):
    csv = "csv"
    parquet = "parquet"


app = typer.Typer()
"""The export commands; deepz.cli merges them into `deepz`."""


@app.command("export")
def export(
    recording: Path = typer.Argument(..., help="Recording (REC.zarr) or tracks store (REC.tracks.zarr)."),
    out: Path = typer.Option(..., "--out", help="Directory for the tables."),
    fmt: TableFormat = typer.Option(TableFormat.csv, "--format", help="csv or parquet."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace tables already in --out."),
) -> None:
    """Write tracks, traces (dF/F per neuron), per-frame metadata and calibration reference neurons as
    tables whose column names carry their units (time_s, z_um, intensity_adu; Parquet: field metadata)."""
    from storage.export import export_recording

    for file in export_recording(recording, out, fmt.value, overwrite=overwrite):
        typer.echo(f"wrote {file}")
