"""Round trip through RecordingWriter and RecordingReader on real Zarr stores, with both backends."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from storage import RecordingReader, RecordingWriter, WriterBehindError, WriterError
from wire.frames import FrameMeta
from storage.synthetic import blob_volume

SHAPE = (64, 96)
PLANES = np.array([-4.0, -1.0, 2.0])


def _record(t: int) -> FrameMeta:
    return FrameMeta(t, 1000 + t, t * 0.01, 5.0 + t * 0.01, 0.25 * t, 9.5, t % 3, t % 2 == 1)


def _volume(t: int) -> np.ndarray:
    return np.full((len(PLANES), *SHAPE), t, np.uint16) + np.arange(SHAPE[1], dtype=np.uint16)


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_round_trip_frames_metadata_volumes_tracks(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    frames = np.stack([blob_volume(SHAPE, n_blobs=8, seed=t) for t in range(40)])
    attrs = {
        "config": {"camera_hz": 100, "path": tmp_path},
        "model_manifest": {"name": "tiny", "digest": "abc"},
    }
    with RecordingWriter(
        tmp_path / "rec.zarr",
        frame_shape=SHAPE,
        pixel_size_um=0.325,
        planes_um=PLANES,
        volume_every=1,
        attrs=attrs,
        backend=backend,
    ) as writer:
        for t, frame in enumerate(frames):
            writer.write_frame(frame, _record(t))
            if t % 10 == 0:
                writer.write_volume(t, _volume(t))
                positions = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]) + t
                writer.write_tracks(t, np.array([7, 9]), positions, np.array([10.0, 20.0]), np.array([t, -t]))
        writer.close(summary={"frames": 40})
    assert writer.stats.frames_stored == 40 and writer.stats.volumes_stored == 4

    reader = RecordingReader(tmp_path / "rec.zarr")
    assert reader.complete and reader.stopped_reason is None
    assert reader.n_frames == 40 and reader.frame_shape == SHAPE and reader.frames.shape == (40, *SHAPE)
    np.testing.assert_array_equal(reader.frames[:], frames)
    np.testing.assert_array_equal(reader.frame(-1), frames[-1])
    meta = reader.metadata
    np.testing.assert_array_equal(meta["image_number"], 1000 + np.arange(40))
    np.testing.assert_array_equal(meta["volume_skipped"], np.arange(40) % 2 == 1)
    np.testing.assert_allclose(meta["focus_z_um"], 0.25 * np.arange(40))
    np.testing.assert_array_equal(reader.planes_um, PLANES)
    assert reader.has_volumes
    np.testing.assert_array_equal(reader.volume_indices, [0, 10, 20, 30])
    np.testing.assert_array_equal(reader.volume(20), _volume(20))
    assert reader.volume(21) is None
    tracks = reader.tracks()
    np.testing.assert_array_equal(tracks["t"], np.repeat([0, 10, 20, 30], 2))
    np.testing.assert_allclose(tracks["x"][:2], [3.0, 6.0])
    ids, t, dff = reader.traces()
    np.testing.assert_array_equal(ids, [7, 9])
    np.testing.assert_array_equal(t, [0, 10, 20, 30])
    np.testing.assert_allclose(dff, [[0, 10, 20, 30], [0, -10, -20, -30]])
    assert reader.attrs["model_manifest"] == {"name": "tiny", "digest": "abc"}
    assert reader.attrs["config"]["path"] == str(tmp_path)
    assert reader.attrs["summary"] == {"frames": 40}
    assert reader.attrs["versions"]["zarr"].startswith("3.")


@pytest.mark.parametrize(("volume_every", "expected"), [(1, [0, 1, 2, 3, 4, 5]), (3, [0, 3]), (0, [])])
def test_volume_policy_every_nth_or_none(tmp_path: Path, volume_every: int, expected: list[int]) -> None:
    with RecordingWriter(
        tmp_path / "rec.zarr",
        frame_shape=SHAPE,
        pixel_size_um=1.0,
        planes_um=PLANES,
        volume_every=volume_every,
        backend="zarr",
    ) as writer:
        for t in range(6):
            writer.write_frame(np.zeros(SHAPE, np.uint16), _record(t))
            writer.write_volume(t, _volume(t))
    assert writer.stats.volumes_skipped_by_policy == 6 - len(expected)
    reader = RecordingReader(tmp_path / "rec.zarr")
    np.testing.assert_array_equal(reader.volume_indices, expected)
    assert reader.has_volumes == (volume_every > 0)
    for t in expected:
        np.testing.assert_array_equal(reader.volume(t), _volume(t))


def test_full_queue_raises_at_once_and_never_drops_silently(tmp_path: Path) -> None:
    frame = np.random.default_rng(0).poisson(500, (512, 512)).astype(np.uint16)
    writer = RecordingWriter(
        tmp_path / "rec.zarr", frame_shape=(512, 512), pixel_size_um=1.0, queue_frames=1, backend="zarr"
    )
    accepted = 0
    with pytest.raises(WriterBehindError, match="behind.*NOT stored"):
        for t in range(100_000):
            writer.write_frame(frame, _record(t))
            accepted += 1
    writer.close()
    assert writer.stats.frames_queued == writer.stats.frames_stored == accepted
    reader = RecordingReader(tmp_path / "rec.zarr")
    assert reader.n_frames == accepted
    np.testing.assert_array_equal(reader.frame(accepted - 1), frame)


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_writer_failure_is_raised_on_next_call_with_its_cause(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    path = tmp_path / "rec.zarr"
    writer = RecordingWriter(
        path, frame_shape=SHAPE, pixel_size_um=1.0, commit_interval_s=0.0, backend=backend
    )
    shutil.rmtree(path / "0" / "0")  # the raw frames' array
    (path / "0" / "0").write_text("not a directory")
    with pytest.raises(WriterError, match="failed") as failure:
        for t in range(10_000):
            writer.write_frame(np.ones(SHAPE, np.uint16), _record(t))
            time.sleep(0.01)
    assert failure.value.__cause__ is not None
    assert writer.stats.error is failure.value.__cause__
    with pytest.raises(WriterError, match="stopped early"):
        writer.close()


def test_frames_must_match_the_declared_shape_and_dtype(tmp_path: Path) -> None:
    with RecordingWriter(tmp_path / "rec.zarr", frame_shape=SHAPE, pixel_size_um=1.0) as writer:
        with pytest.raises(ValueError, match="uint16"):
            writer.write_frame(np.zeros(SHAPE, np.float32), _record(0))
        with pytest.raises(ValueError, match="no volumes"):
            writer.write_volume(0, _volume(0))


def test_frames_behave_like_an_array(tmp_path: Path) -> None:
    frames = np.stack([blob_volume(SHAPE, n_blobs=4, seed=t) for t in range(6)])
    with RecordingWriter(tmp_path / "rec.zarr", frame_shape=SHAPE, pixel_size_um=1.0) as writer:
        for t, frame in enumerate(frames):
            writer.write_frame(frame, _record(t))
    recorded = RecordingReader(tmp_path / "rec.zarr").frames
    assert (len(recorded), recorded.ndim, recorded.dtype) == (6, 3, np.uint16)
    np.testing.assert_array_equal(recorded[[1, -1]], frames[[1, -1]])
    np.testing.assert_array_equal(recorded[2:5, 3, :7], frames[2:5, 3, :7])
    np.testing.assert_array_equal(np.asarray(recorded), frames)
    with pytest.raises(IndexError):
        recorded[6]


def test_a_recording_being_written_reads_up_to_its_last_commit(tmp_path: Path) -> None:
    path = tmp_path / "rec.zarr"
    writer = RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=1.0, commit_interval_s=0.0)
    for t in range(3):
        writer.write_frame(np.full(SHAPE, t, np.uint16), _record(t))
        writer.write_tracks(t, np.array([4, 5]), np.zeros((2, 3)), np.ones(2), np.array([t, 2 * t]))
    for _ in range(3000):
        if writer.stats.track_rows_stored == 6 and writer.stats.frames_stored == 3:
            break
        time.sleep(0.01)
    reader = RecordingReader(path)
    assert not reader.complete and reader.stopped_reason.startswith("interrupted")
    assert reader.n_frames == 3
    ids, t, dff = reader.traces()
    np.testing.assert_array_equal(ids, [4, 5])
    np.testing.assert_allclose(dff, [[0, 1, 2], [0, 2, 4]])
    writer.close()
    assert RecordingReader(path).complete
