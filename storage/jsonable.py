"""Plain-JSON conversion of run attributes (config models, manifests) before they go into a recording."""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np


def to_json(value: Any) -> Any:
    """Plain JSON types for attributes: pydantic models, dataclasses, numpy values and paths are converted."""

    def convert(obj: Any) -> Any:
        if hasattr(obj, "model_dump"):
            return obj.model_dump(mode="json")
        if is_dataclass(obj) and not isinstance(obj, type):
            return asdict(obj)
        if isinstance(obj, np.ndarray | np.generic):
            return obj.tolist()
        if isinstance(obj, Path):
            return str(obj)
        raise TypeError(f"attribute value {obj!r} of type {type(obj).__name__} cannot be stored as JSON")

    return json.loads(json.dumps(value, default=convert))
