"""Guard the output path of a new store: never replace existing data unless asked, never an input being read."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from pathlib import Path

from storage.records import RecordingExistsError


def _overlaps(a: Path, b: Path) -> bool:
    """True when a and b are the same path or one lies inside the other (links resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a in b.parents or b in a.parents


def check_output(path: Path, *, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Raise RecordingExistsError unless a new store may be written at ``path``; changes nothing.

    ``inputs`` are the paths the run reads from: an output that is, holds or lies inside one of them is
    refused even with ``overwrite``, since replacing it would destroy the data before it is read.
    """
    for source in inputs:
        if _overlaps(Path(path), Path(source)):
            raise RecordingExistsError(
                f"The output {path} is the input {source} (or lies inside it, or holds it): writing there "
                "would destroy the data before it is read, so a recording is never modified in place, "
                "even with --overwrite. Choose a new output path, e.g. "
                f"{Path(source).with_name(Path(source).stem + '-new' + Path(source).suffix)}."
            )
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


def claim_output(path: Path, *, overwrite: bool, inputs: Iterable[str | Path] = ()) -> None:
    """Make ``path`` free for a new store (see check_output), deleting an old one there when ``overwrite``."""
    check_output(path, overwrite=overwrite, inputs=inputs)
    if path.exists():
        shutil.rmtree(path)
