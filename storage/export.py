"""A recording's tables as CSV or Parquet files with units: tracks, traces, frame metadata, reference neurons.

Column names carry their unit (``time_s``, ``z_um``, ``intensity_adu``; ``dff`` is the dimensionless dF/F);
Parquet files also carry each column's unit in the field metadata (``unit``) and the source in the schema's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import zarr

from storage.calibration import read_scan, scan_records
from storage.reader import RecordingReader
from storage.records import RecordingExistsError

Format = Literal["csv", "parquet"]
UNITS = {
    "track_id": "track id", "frame": "frame index", "time_s": "second", "z_um": "micrometer",
    "y_um": "micrometer", "x_um": "micrometer", "intensity_adu": "camera counts (ADU)",
    "dff": "dF/F (ratio to baseline)", "scan": "calibration scan index", "focus_um": "micrometer",
    "image_number": "count", "camera_time_s": "second", "host_time_s": "second (unix epoch)",
    "focus_z_um": "micrometer", "exposure_ms": "millisecond", "lost_before": "frames",
    "volume_skipped": "bool",
}  # fmt: skip
"""Unit of every exported column; trace columns ``dff_<id>`` are dF/F of track ``id``."""


def tracks_table(reader: RecordingReader) -> pd.DataFrame:
    """One row per tracked (or read-out) neuron per time point, sorted by track then frame."""
    t = reader.tracks()
    table = pd.DataFrame({
        "track_id": t["id"], "frame": t["t"], "time_s": reader.frame_times_s(t["t"]), "z_um": t["z"],
        "y_um": t["y"], "x_um": t["x"], "intensity_adu": t["intensity"], "dff": t["dff"],
    })  # fmt: skip
    return table.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)


def traces_table(reader: RecordingReader) -> pd.DataFrame:
    """A row per tracked time point: frame, time_s, a dF/F column ``dff_<id>`` per neuron (NaN: untracked)."""
    ids, t, dff = reader.traces()
    columns = {"frame": t, "time_s": reader.frame_times_s(t)}
    columns |= {f"dff_{int(i)}": dff[k] for k, i in enumerate(ids)}
    return pd.DataFrame(columns)


def frames_table(reader: RecordingReader) -> pd.DataFrame:
    """The per-frame metadata, one row per stored raw frame."""
    meta = reader.metadata
    return pd.DataFrame({"frame": np.arange(reader.n_frames), **{k: meta[k] for k in meta}})


def reference_table(path: Path) -> pd.DataFrame | None:
    """The reference neurons of every calibration scan (z relative to its focus), or None without scans."""
    root = zarr.open_group(path, mode="r")
    records = scan_records(root)
    if not records:
        return None
    parts = []
    for record in records:
        scan = read_scan(root, record.index)
        z, y, x = scan.reference_positions_um.T
        parts.append(pd.DataFrame({
            "scan": record.index, "frame": record.frame_index, "track_id": scan.reference_ids, "z_um": z,
            "y_um": y, "x_um": x, "focus_um": record.focus_um,
        }))  # fmt: skip
    return pd.concat(parts, ignore_index=True)


def export_recording(
    path: str | Path, out_dir: str | Path, fmt: Format, *, overwrite: bool = False
) -> list[Path]:
    """Write tracks, traces, frames (and reference, when the store has calibration scans) to ``out_dir``."""
    path, out_dir = Path(path), Path(out_dir)
    reader = RecordingReader(path)
    tables = {"tracks": tracks_table(reader), "traces": traces_table(reader)}
    if reader.n_frames:
        tables["frames"] = frames_table(reader)
    reference = reference_table(path)
    if reference is not None:
        tables["reference"] = reference
    files = {name: out_dir / f"{name}.{fmt}" for name in tables}
    existing = [str(f) for f in files.values() if f.exists()]
    if existing and not overwrite:
        raise RecordingExistsError(f"{', '.join(existing)} already exist; pass --overwrite or another --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        _write(table, files[name], fmt, {"source": str(path), "table": name})
    return list(files.values())


def _unit(column: str) -> str:
    return UNITS["dff"] if column.startswith("dff_") else UNITS[column]


def _write(table: pd.DataFrame, file: Path, fmt: Format, about: dict[str, str]) -> None:
    if fmt == "csv":
        table.to_csv(file, index=False)
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    arrow = pa.Table.from_pandas(table, preserve_index=False)
    schema = pa.schema(
        [f.with_metadata({"unit": _unit(f.name)}) for f in arrow.schema],
        metadata={**(arrow.schema.metadata or {}), b"deepz": json.dumps(about).encode()},
    )
    pq.write_table(arrow.cast(schema), file)
