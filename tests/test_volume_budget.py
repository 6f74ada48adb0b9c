"""`--volumes auto`: the recording stores as many volumes as the disk takes, measured at the start."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from storage import RecordingReader, RecordingWriter
from wire.frames import FrameMeta
from storage.disk_rate import measure_write_rate, volume_budget


def test_disk_rate_is_measured_and_bounds_the_volume_rate(tmp_path: Path) -> None:
    rate = measure_write_rate(tmp_path, nbytes=8 * 2**20)
    assert rate > 1e6 and not any(tmp_path.iterdir())  # MB/s at least; the probe file is gone
    small = volume_budget(tmp_path, frame_shape=(64, 64), planes=4, frame_rate_hz=100)
    large = volume_budget(tmp_path, frame_shape=(512, 512), planes=32, frame_rate_hz=100)
    assert small.max_volumes_hz > 10 * large.max_volumes_hz  # 128x the bytes per volume
    assert "volumes/s are stored" in large.describe()


def test_writer_stores_at_most_the_budgeted_volume_rate(tmp_path: Path) -> None:
    planes = np.arange(4, dtype=np.float64)
    volume = np.ones((4, 32, 32), np.uint16)
    with RecordingWriter(tmp_path / "rec.zarr", frame_shape=(32, 32), pixel_size_um=1.0, planes_um=planes,
                         volume_max_hz=5.0) as writer:  # fmt: skip
        start = time.monotonic()
        t = 0
        while time.monotonic() - start < 1.0:  # offered at about 100 volumes/s for 1 s
            writer.write_frame(volume[0], FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
            writer.write_volume(t, volume)
            t += 1
            time.sleep(0.01)
        skipped = writer.stats.volumes_skipped_by_policy
    stored = RecordingReader(tmp_path / "rec.zarr").volume_indices.size
    assert 4 <= stored <= 6 and stored + skipped == t
