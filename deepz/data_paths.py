"""Where external data sets live: a command-line option or an environment variable, never a machine's path."""

from __future__ import annotations

import os
from pathlib import Path

TARGETTRACK_ENV = "DEEPZ_TARGETTRACK"
TARGETTRACK_HELP = (
    "targettrack data folder (holding data/data_points; https://github.com/rahi-lab/targettrack); "
    f"default: ${TARGETTRACK_ENV}."
)
TARGETTRACK_VOXEL_UM = (1.5, 0.1625, 0.1625)  # (z, y, x): the lab's stated voxel size (data_mask)


def targettrack_dir(option: Path | None) -> Path:
    """The targettrack data set folder: ``option`` (--targettrack-dir), else $DEEPZ_TARGETTRACK.

    Checked up front so a long evaluation never fails at its end for want of the data. Raises
    FileNotFoundError (a user error: one line, exit code 2) naming both ways to give it.
    """
    env = os.environ.get(TARGETTRACK_ENV)
    path = option if option is not None else (Path(env) if env else None)
    if path is None:
        raise FileNotFoundError(
            f"no targettrack data folder given: pass --targettrack-dir DIR or set {TARGETTRACK_ENV}=DIR "
            "(the folder holding data/data_points)"
        )
    if not (path / "data" / "data_points").is_dir():
        raise FileNotFoundError(
            f"{path} is not a targettrack data folder (no data/data_points inside); pass --targettrack-dir DIR "
            f"or set {TARGETTRACK_ENV}=DIR"
        )
    return path
