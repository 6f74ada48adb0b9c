"""How fast the disk under a recording takes durable writes, and how many volumes per second that allows."""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PROBE_BYTES = 64 * 2**20
VOLUME_SHARE = 0.8  # of the disk's rate, what raw frames leave free, volumes may use
ASSUMED_COMPRESSION = 2.0  # lossless blosc on Deep-Z volumes packs about 2.2x (measured in DESIGN.md)


@dataclass(frozen=True)
class VolumeBudget:
    """The volume rate a disk sustains beside the raw stream, and the figures it comes from."""

    disk_mb_s: float
    raw_mb_s: float
    volume_mb: float
    max_volumes_hz: float

    def describe(self) -> str:
        return (
            f"volumes auto: the disk takes {self.disk_mb_s:.0f} MB/s (durable writes, measured now); raw frames "
            f"use {self.raw_mb_s:.0f} MB/s and a volume is about {self.volume_mb:.1f} MB compressed, so at most "
            f"{self.max_volumes_hz:.1f} volumes/s are stored (the rest stay recomputable by replay)"
        )


def measure_write_rate(directory: Path, nbytes: int = PROBE_BYTES) -> float:
    """Bytes per second of a written and fsynced probe file in ``directory`` (removed afterwards)."""
    directory.mkdir(parents=True, exist_ok=True)
    block = os.urandom(min(nbytes, 4 * 2**20))
    with tempfile.NamedTemporaryFile(dir=directory, prefix=".deepz-disk-probe-") as probe:
        start = time.perf_counter()
        written = 0
        while written < nbytes:
            written += probe.write(block)
        probe.flush()
        os.fsync(probe.fileno())
        return written / max(time.perf_counter() - start, 1e-6)


def volume_budget(
    directory: Path, *, frame_shape: tuple[int, int], planes: int, frame_rate_hz: float, upsample: int = 1
) -> VolumeBudget:
    """Measure the disk at ``directory`` and derive the stored-volume rate it sustains beside raw frames."""
    disk = measure_write_rate(directory) / 1e6
    h, w = frame_shape
    raw = 2 * h * w * frame_rate_hz / 1e6
    volume = 2 * planes * h * w * upsample**2 / 1e6 / ASSUMED_COMPRESSION
    return VolumeBudget(disk, raw, volume, max(0.0, (VOLUME_SHARE * disk - raw) / volume))
