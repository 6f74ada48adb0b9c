"""Room kept on a recording's disk for raw frames: once free space falls below a reserve, volumes (which
replay can recompute) are no longer stored, so a long run fills the disk with raw frames, never volumes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

MIN_RESERVE_BYTES = 2 * 2**30
RESERVE_RAW_S = 120.0  # at least this many seconds of raw frames stay writable after volumes stop

__all__ = ["DiskReserve", "default_reserve_bytes"]


def default_reserve_bytes(frame_shape: tuple[int, int], frame_interval_s: float) -> int:
    """The larger of 2 GiB and two minutes of uncompressed 16-bit raw frames at this frame rate."""
    raw_bytes_per_s = 2 * frame_shape[0] * frame_shape[1] / max(frame_interval_s, 1e-6)
    return int(max(MIN_RESERVE_BYTES, RESERVE_RAW_S * raw_bytes_per_s))


class DiskReserve:
    """Whether ``nbytes`` more fit on the disk under ``path`` above ``reserve_bytes``: the free space is re-read
    at most once per ``period_s``, and what was taken since is counted against it (volumes come faster than
    a re-read)."""

    def __init__(self, path: Path, reserve_bytes: int, period_s: float = 0.5) -> None:
        if reserve_bytes < 0 or period_s < 0:
            raise ValueError("reserve_bytes and period_s must be >= 0.")
        self.path, self.reserve_bytes, self.period_s = Path(path), int(reserve_bytes), period_s
        self._free, self._read_at, self._taken = self._read(), time.monotonic(), 0

    @property
    def free_bytes(self) -> int:
        """Free bytes on the disk as last read, less what was taken since."""
        return self._free - self._taken

    def take(self, nbytes: int) -> bool:
        """True (and counted) when ``nbytes`` more still leave the reserve free; False otherwise."""
        now = time.monotonic()
        if now - self._read_at >= self.period_s:
            self._free, self._read_at, self._taken = self._read(), now, 0
        if self.free_bytes - nbytes <= self.reserve_bytes:
            return False
        self._taken += nbytes
        return True

    def _read(self) -> int:
        folder = self.path if self.path.is_dir() else self.path.parent
        return int(shutil.disk_usage(folder).free)
