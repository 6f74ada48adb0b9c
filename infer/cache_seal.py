"""Cached engine files (ONNX exports, TensorRT engines) run only when they belong to the model being run.

A cache file is sealed when it is built: a JSON sidecar beside it records the digest of the model it was
built from and the file's own sha256. Before a cached file is used, both are checked; a file that was swapped,
edited, truncated or left by another model fails the check and is rebuilt, never run in the model's name.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infer.model_io import file_sha256


def seal_path(path: Path) -> Path:
    """The sidecar of a cached file: the same name with a .json suffix."""
    return path.with_suffix(".json")


def seal(path: Path, model_digest: str, fields: Mapping[str, Any] | None = None) -> None:
    """Record that ``path``, as it is now, was built from the model ``model_digest`` (plus ``fields``)."""
    record = {**(fields or {}), "model_digest": model_digest, "sha256": file_sha256(path)}
    tmp = seal_path(path).with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(seal_path(path))


def seal_problem(path: Path, model_digest: str) -> str | None:
    """Why ``path`` must not be run for the model with ``model_digest``, or None when its seal holds."""
    if not path.is_file():
        return "is missing"
    try:
        record = json.loads(seal_path(path).read_text())
    except (OSError, ValueError):
        return f"has no readable seal {seal_path(path).name}"
    if not isinstance(record, dict) or record.get("model_digest") != model_digest:
        return f"was built from another model than digest {model_digest[:12]}..."
    if record.get("sha256") != file_sha256(path):
        return "changed since it was built (its sha256 no longer matches its seal)"
    return None
