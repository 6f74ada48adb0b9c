"""Guard the output path of a new recording: never replace existing data unless asked to."""

from __future__ import annotations

import shutil
from pathlib import Path

from storage.records import RecordingExistsError


def claim_output(path: Path, *, overwrite: bool) -> None:
    """Make ``path`` free for a new store, deleting an old Zarr store there only when ``overwrite``."""
    if not path.exists():
        return
    if not overwrite:
        raise RecordingExistsError(
            f"{path} already exists and recordings are never overwritten by default. Pass --overwrite "
            "(overwrite=True) to replace it, or choose another output path."
        )
    is_zarr = path.is_dir() and (path / "zarr.json").exists()
    is_empty_dir = path.is_dir() and not any(path.iterdir())
    if not (is_zarr or is_empty_dir):
        raise RecordingExistsError(
            f"{path} exists and is not a Zarr store, so it is not deleted even with --overwrite. "
            "Choose another output path or remove it yourself."
        )
    shutil.rmtree(path)
