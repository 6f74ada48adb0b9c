"""Offline global linking (laptrack) and `deepz track` on a real recording store."""

from __future__ import annotations

import numpy as np
from typer.testing import CliRunner

from deepz.cli import app
from storage import RecordingReader, RecordingWriter
from wire.frames import FrameMeta
from track.detect import Detections
from track.offline import OfflineConfig, link_global, track_volumes
from deepz.lab.blobs import BlobConfig, BlobWorld

BASE = np.array([[0.0, 0.0, 0.0], [0.0, 6.0, 0.0], [3.0, 0.0, 6.0]])


def moving_detections(n: int, absent: dict[int, range]) -> tuple[list[Detections], list[np.ndarray]]:
    """BASE drifting in y, shuffled each frame; row r is missing in the frames absent[r]."""
    rng = np.random.default_rng(1)
    dets, rows = [], []
    for t in range(n):
        order = rng.permutation([r for r in range(len(BASE)) if t not in absent.get(r, ())])
        dets.append(Detections(BASE[order] + [0, 0.2 * t, 0], np.ones(len(order))))
        rows.append(order)
    return dets, rows


def test_global_link_closes_gaps_with_stable_ids():
    dets, rows = moving_detections(12, absent={1: range(4, 7)})
    ids = link_global(dets, OfflineConfig(max_gap=5))
    mapping: dict[int, set[int]] = {}
    for r, i in zip(rows, ids, strict=True):
        for row, tid in zip(r, i, strict=True):
            mapping.setdefault(int(row), set()).add(int(tid))
    assert all(len(v) == 1 for v in mapping.values())
    assert sorted(min(v) for v in mapping.values()) == [0, 1, 2]
    assert [a.tolist() for a in ids] == [a.tolist() for a in link_global(dets, OfflineConfig(max_gap=5))]


def test_global_link_empty_frames():
    ids = link_global([Detections.empty(), Detections(BASE, np.ones(3)), Detections.empty()])
    assert [len(i) for i in ids] == [0, 3, 0]


def test_track_volumes_gives_one_track_per_neuron():
    world = BlobWorld(BlobConfig(shape=(12, 64, 64), n_neurons=6, seed=2))
    table = track_volumes((world.volume(t * 0.1) for t in range(6)), world.config.voxel_um)
    assert len(np.unique(table.ids)) == 6
    assert len(table.t) == 36
    ids, pos, _, dff = table.at(5)
    assert len(ids) == 6 and pos.shape == (6, 3) and np.all(np.isfinite(dff))


def test_deepz_track_writes_tracks_to_a_new_store(tmp_path):
    world = BlobWorld(BlobConfig(shape=(8, 64, 64), voxel_um=(1.0, 0.5, 0.5), n_neurons=5, seed=4))
    planes = np.arange(8, dtype=np.float64) - 4.0
    src, out = tmp_path / "rec.zarr", tmp_path / "rec.tracks.zarr"
    with RecordingWriter(src, frame_shape=(64, 64), pixel_size_um=0.5, planes_um=planes, volume_every=1) as w:
        for t in range(5):
            vol = world.volume(t * 0.1).numpy().astype(np.uint16)
            w.write_frame(vol[4], FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
            w.write_volume(t, vol)
    result = CliRunner().invoke(app, ["track", str(src), "--out", str(out)])
    assert result.exit_code == 0, result.output
    tracks = RecordingReader(out).tracks()
    assert sorted(set(tracks["t"].tolist())) == [0, 1, 2, 3, 4]
    assert len(np.unique(tracks["id"])) == 5
    assert tracks["z"].min() >= -4.0 and tracks["z"].max() <= 3.0  # plane coordinates of the source
