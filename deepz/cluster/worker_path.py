"""Dask workers put their own directory first on sys.path, and it holds their spill folder `storage/`.

With an editable install (found by a finder after sys.path), ``import storage`` on a worker would then give
that folder as an empty namespace package instead of this project's storage package; import the real one.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def import_storage() -> None:
    """Import the project's storage package with folders that only shadow it left off sys.path."""
    module = sys.modules.get("storage")
    if module is not None and getattr(module, "__file__", None) is not None:
        return
    sys.modules.pop("storage", None)
    saved = sys.path[:]
    sys.path[:] = [p for p in saved if not (Path(p or ".") / "storage").is_dir()
                   or (Path(p or ".") / "storage" / "__init__.py").is_file()]  # fmt: skip
    try:
        importlib.import_module("storage")
    finally:
        sys.path[:] = saved
