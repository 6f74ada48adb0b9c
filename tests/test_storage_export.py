"""`deepz export`: a recording's and a tracks store's tables as CSV and Parquet, with units and true times."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from deepz.cli import app
from storage import RecordingWriter
from wire.frames import FrameMeta

SHAPE = (16, 16)
IDS = np.array([2, 7])


def _tracks(writer: RecordingWriter, t: int) -> None:
    writer.write_tracks(t, IDS, np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]), np.array([10.0, 20.0]), np.array([t, -t]))


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("export") / "rec.zarr"
    with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=0.5, frame_interval_s=0.01) as writer:
        for t in range(6):  # the camera runs 2% slow: its times, not the nominal rate, are the truth
            writer.write_frame(np.zeros(SHAPE, np.uint16), FrameMeta(t, t, 3.0 + t * 0.0102, 0.0, 0, 5, 0, False))
            if t % 2 == 0:
                _tracks(writer, t)
    return path


def _export(path: Path, out: Path, fmt: str, *extra: str) -> str:
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(out), "--format", fmt, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_csv_tables_carry_units_and_camera_times(recording: Path, tmp_path: Path) -> None:
    _export(recording, tmp_path, "csv")
    tracks = pd.read_csv(tmp_path / "tracks.csv")
    assert list(tracks.columns) == ["track_id", "frame", "time_s", "z_um", "y_um", "x_um", "intensity_adu", "dff"]
    assert tracks["track_id"].tolist() == [2, 2, 2, 7, 7, 7] and tracks["frame"].tolist() == [0, 2, 4] * 2
    np.testing.assert_allclose(tracks["time_s"][:3], [0.0, 0.0204, 0.0408])
    traces = pd.read_csv(tmp_path / "traces.csv")
    assert list(traces.columns) == ["frame", "time_s", "dff_2", "dff_7"] and traces["dff_7"].tolist() == [0, -2, -4]
    assert len(pd.read_csv(tmp_path / "frames.csv")) == 6 and not (tmp_path / "reference.csv").exists()


def test_parquet_fields_carry_their_units_and_existing_tables_are_kept(recording: Path, tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    _export(recording, tmp_path, "parquet")
    schema = pq.read_schema(tmp_path / "tracks.parquet")
    assert schema.field("z_um").metadata[b"unit"] == b"micrometer"
    assert pq.read_schema(tmp_path / "traces.parquet").field("dff_2").metadata[b"unit"].startswith(b"dF/F")
    result = CliRunner().invoke(app, ["export", str(recording), "--out", str(tmp_path), "--format", "parquet"])
    assert result.exit_code == 2 and "--overwrite" in result.output
    _export(recording, tmp_path, "parquet", "--overwrite")


def test_a_tracks_store_exports_with_nominal_times(tmp_path: Path) -> None:
    path = tmp_path / "rec.tracks.zarr"  # what `deepz track` writes: tracks of another recording, no frames
    with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=0.5, frame_interval_s=0.05) as writer:
        for t in (10, 20):
            _tracks(writer, t)
    _export(path, tmp_path / "out", "csv")
    tracks = pd.read_csv(tmp_path / "out" / "tracks.csv")
    np.testing.assert_allclose(tracks["time_s"][:2], [0.5, 1.0])
    assert not (tmp_path / "out" / "frames.csv").exists()
