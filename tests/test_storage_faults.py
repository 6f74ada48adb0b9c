"""Bad input and faults: existing output, read-only or missing paths, full disk, corrupt chunk, foreign."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zarr

from storage import (
    CorruptChunkError,
    RecordingError,
    RecordingExistsError,
    RecordingReader,
    RecordingWriter,
    WriterBehindError,
    WriterError,
)
from wire.frames import FrameMeta

SHAPE = (64, 64)


def _frame(t: int, shape: tuple[int, int] = SHAPE) -> np.ndarray:
    return np.random.default_rng(t).poisson(300, shape).astype(np.uint16)


def _record(t: int) -> FrameMeta:
    return FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False)


def _write(path: Path, n: int, **kwargs) -> None:
    with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=1.0, backend="zarr", **kwargs) as writer:
        for t in range(n):
            writer.write_frame(_frame(t), _record(t))


@contextlib.contextmanager
def _tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A real small or read-only filesystem (needs mount rights; the test is skipped without them)."""
    path.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def test_existing_output_is_never_overwritten_without_overwrite(tmp_path: Path) -> None:
    path = tmp_path / "rec.zarr"
    _write(path, 3)
    with pytest.raises(RecordingExistsError, match="--overwrite"):
        _write(path, 5)
    assert RecordingReader(path).n_frames == 3
    _write(path, 5, overwrite=True)
    assert RecordingReader(path).n_frames == 5
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "important.txt").write_text("keep me")
    with pytest.raises(RecordingExistsError, match="not a Zarr store"):
        _write(tmp_path / "notes", 1, overwrite=True)
    assert (tmp_path / "notes" / "important.txt").exists()


def test_read_only_directory_gives_a_clear_error_and_recordings_there_stay_readable(tmp_path: Path) -> None:
    source = tmp_path / "rec.zarr"
    _write(source, 4)
    with _tmpfs(tmp_path / "ro", "size=8m") as mount:
        subprocess.run(["cp", "-r", str(source), str(mount)], check=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with pytest.raises(WriterError, match="cannot create recording.*Read-only file system"):
            _write(mount / "new.zarr", 1)
        reader = RecordingReader(mount / "rec.zarr")
        np.testing.assert_array_equal(reader.frames[:], np.stack([_frame(t) for t in range(4)]))


def test_missing_path_and_non_zarr_path_are_refused_clearly(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="does not exist"):
        RecordingReader(tmp_path / "nothing.zarr")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="not a Zarr v3 store"):
        RecordingReader(tmp_path / "empty")


def test_store_written_by_another_program_is_refused(tmp_path: Path) -> None:
    zarr.create_array(tmp_path / "foreign.zarr", shape=(4, 8, 8), dtype="uint16")
    zarr.create_group(tmp_path / "ome.zarr", attributes={"ome": {"version": "0.5", "multiscales": []}})
    for name in ("foreign.zarr", "ome.zarr"):
        with pytest.raises(RecordingError, match="another program"):
            RecordingReader(tmp_path / name)


def test_corrupt_chunk_is_named_and_the_rest_stays_readable(tmp_path: Path) -> None:
    path = tmp_path / "rec.zarr"
    _write(path, 20)
    shard = path / "0" / "0" / "c" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    reader = RecordingReader(path)
    bad = []
    for t in range(reader.n_frames):
        try:
            np.testing.assert_array_equal(reader.frame(t), _frame(t))
        except CorruptChunkError as exc:
            assert f"row t={t}" in str(exc) and "0/0/c/0/0/0" in str(exc)
            bad.append(t)
    assert len(bad) == 1
    with pytest.raises(CorruptChunkError, match=f"0/0.*t={bad[0]}"):
        reader.frames[:]
    np.testing.assert_array_equal(reader.metadata["image_number"], np.arange(20))


def test_a_corrupt_volume_names_its_frame(tmp_path: Path) -> None:
    path = tmp_path / "rec.zarr"
    with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=1.0, planes_um=[0.0, 1.0]) as writer:
        for t in range(12):
            writer.write_frame(_frame(t), FrameMeta(t, t, t * 0.01, 0.0, 0.0, 1.0, 0, False))
            if t % 5 == 0:
                writer.write_volume(t, np.full((2, *SHAPE), t, np.uint16))
    shard = path / "1" / "0" / "c" / "1" / "0" / "0" / "0"  # row 1: the volume of frame 5
    shard.write_bytes(b"not a chunk")
    reader = RecordingReader(path)
    assert reader.volume(10)[0, 0, 0] == 10
    with pytest.raises(CorruptChunkError, match=r"volume of frame 5 \(row 1\).*1/0/c/1/0/0/0"):
        reader.volume(5)


@pytest.mark.parametrize("backend", ["zarr", "tensorstore"])
def test_disk_full_on_a_real_small_filesystem(tmp_path: Path, backend: str) -> None:
    pytest.importorskip(backend)
    with _tmpfs(tmp_path / "small", "size=2m") as mount:
        writer = RecordingWriter(
            mount / "rec.zarr",
            frame_shape=(256, 256),
            pixel_size_um=1.0,
            backend=backend,
            commit_interval_s=0.02,
        )
        with pytest.raises(WriterError, match="failed: .*No space left on device") as failure:
            for t in range(100_000):
                try:
                    writer.write_frame(_frame(t, (256, 256)), _record(t))
                except WriterBehindError:
                    time.sleep(0.01)
        assert failure.value.__cause__ is writer.stats.error
        with pytest.raises(WriterError, match="stopped early"):
            writer.close()
        reader = RecordingReader(mount / "rec.zarr")
        assert reader.n_frames >= writer.stats.frames_stored > 0
        expected = np.stack([_frame(t, (256, 256)) for t in range(reader.n_frames)])
        np.testing.assert_array_equal(reader.frames[:], expected)
        assert not reader.complete


@pytest.mark.parametrize("wait", [False, True])
def test_waiting_writer_stores_every_volume_when_the_disk_is_slower(tmp_path: Path, wait: bool) -> None:
    """Replay's writer waits for the disk; a live writer refuses what does not fit (and says so)."""
    planes = np.arange(8, dtype=np.float64)
    volume = np.random.default_rng(0).poisson(300, (8, 128, 128)).astype(np.uint16)
    refused = 0
    with RecordingWriter(tmp_path / "rec.zarr", frame_shape=(128, 128), pixel_size_um=1.0, planes_um=planes,
                         queue_volumes=1, queue_frames=1, wait_when_behind=wait) as writer:  # fmt: skip
        for t in range(40):
            writes = (lambda: writer.write_frame(volume[0], _record(t)), lambda: writer.write_volume(t, volume))
            for write in writes:
                try:
                    write()
                except WriterBehindError:
                    refused += 1
    reader = RecordingReader(tmp_path / "rec.zarr")
    if wait:
        assert refused == 0 and reader.n_frames == 40 and reader.volume_indices.tolist() == list(range(40))
    else:
        assert refused > 0 and reader.n_frames + reader.volume_indices.size == 80 - refused


def test_volumes_stop_at_the_disk_reserve_and_raw_frames_go_on(tmp_path: Path, caplog) -> None:
    planes = np.linspace(-2.0, 2.0, 4)
    volume = np.ones((4, *SHAPE), np.uint16)
    for reserve, stored in ((0, 3), (2**60, 0)):  # no reserve: every volume; more than any disk: none
        path = tmp_path / f"rec-{reserve}.zarr"
        with caplog.at_level("WARNING", logger="storage.writer"), RecordingWriter(
            path, frame_shape=SHAPE, pixel_size_um=1.0, planes_um=planes, volume_reserve_bytes=reserve
        ) as writer:
            for t in range(3):
                writer.write_frame(_frame(t), _record(t))
                writer.write_volume(t, volume)
        reader = RecordingReader(path)
        assert reader.n_frames == 3 and reader.volume_indices.size == stored
        assert writer.stats.volumes_skipped_for_space == 3 - stored
    assert sum("volumes are no longer stored" in r.getMessage() for r in caplog.records) == 1  # said once


def test_a_filling_disk_keeps_its_reserve_for_raw_frames(tmp_path: Path) -> None:
    planes = np.linspace(-2.0, 2.0, 32)
    rng = np.random.default_rng(0)
    with _tmpfs(tmp_path / "small", "size=24m") as disk:
        path = disk / "rec.zarr"
        with RecordingWriter(path, frame_shape=SHAPE, pixel_size_um=1.0, planes_um=planes,
                             volume_reserve_bytes=12 * 2**20) as writer:
            t = 0
            while writer.stats.volumes_skipped_for_space == 0 and t < 200:  # ~256 KB of noise per volume
                writer.write_frame(_frame(t), _record(t))
                with contextlib.suppress(WriterBehindError):  # a loaded machine: that volume is not stored
                    writer.write_volume(t, rng.integers(0, 65535, (32, *SHAPE), dtype=np.uint16))
                time.sleep(0.02)
                t += 1
            for _ in range(20):
                writer.write_frame(_frame(t), _record(t))
                t += 1
        reader = RecordingReader(path)
        assert writer.stats.volumes_skipped_for_space > 0 and reader.complete
        assert reader.n_frames == t and 0 < reader.volume_indices.size < t - 20
