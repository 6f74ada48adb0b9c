"""Software versions recorded in every recording, so results can be traced to the code that made them."""

from __future__ import annotations

import importlib.metadata
import platform

_PACKAGES = ("deepz-live", "numpy", "zarr", "numcodecs", "tensorstore", "torch", "pymmcore-plus")


def software_versions() -> dict[str, str]:
    """Python, platform and the installed versions of the packages that shape a recording."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions
