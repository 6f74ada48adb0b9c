"""Focal-stack files that standard tools open with their calibration: OME-Zarr 0.5 or OME-TIFF.

A stack is (Z, H, W) uint16 frames plus each plane's focus offset ``z_um`` (Z,) from the focus the scan
started at (sample z in um, larger = deeper), the pixel size and free attributes (absolute stage positions,
exposure, source). On disk:

- ``stack.zarr``: an OME-NGFF 0.5 image (array ``0``, axes z/y/x in micrometer, z scale = the mean step,
  z translation = the first offset) with the exact offsets in the array ``z_um`` beside it and the attributes
  under ``deepz_stack``; napari, ome-zarr-py and Fiji (via its Zarr readers) show it at its physical scale.
- ``stack.ome.tif`` / ``stack.tif``: OME-TIFF with PhysicalSizeX/Y/Z in um, one Plane PositionZ per plane,
  and the attributes as JSON in the image Description.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage.layout import compressors
from storage.ngff import ngff_image_attrs
from storage.records import RecordingError

ATTRS_KEY = "deepz_stack"


def _z_step(z_um: np.ndarray) -> float:
    return float(np.mean(np.diff(z_um))) if len(z_um) > 1 else 1.0


def save_stack(
    path: Path | str,
    stack: np.ndarray,
    z_um: np.ndarray,
    *,
    pixel_size_um: float,
    attrs: dict[str, Any] | None = None,
) -> Path:
    """Write a focal stack as OME-Zarr (``.zarr``) or OME-TIFF (``.tif``/``.tiff``), replacing ``path``."""
    path = Path(path)
    z = np.asarray(z_um, np.float64)
    stack = np.asarray(stack)
    if stack.ndim != 3 or len(z) != stack.shape[0]:
        raise ValueError(f"a focal stack is (Z, H, W) with one z offset per plane; got {stack.shape} and {len(z)}")
    meta = {"pixel_size_um": float(pixel_size_um), "z_um": z.tolist(), **(attrs or {})}
    if path.suffix == ".zarr":
        px = float(pixel_size_um)
        group = zarr.open_group(path, mode="w", zarr_format=3)
        group.attrs.update(
            ngff_image_attrs(path.stem, "zyx", (_z_step(z), px, px), (float(z[0]), 0.0, 0.0)) | {ATTRS_KEY: meta}
        )
        group.create_array("0", data=stack, chunks=(1, *stack.shape[1:]), compressors=compressors(),
                           dimension_names=("z", "y", "x"))  # fmt: skip
        group.create_array("z_um", data=z)
    elif path.suffix in (".tif", ".tiff"):
        import tifffile

        um = "µm"
        tifffile.imwrite(path, stack, ome=True, photometric="minisblack", metadata={
            "axes": "ZYX", "PhysicalSizeX": pixel_size_um, "PhysicalSizeXUnit": um, "PhysicalSizeY": pixel_size_um,
            "PhysicalSizeYUnit": um, "PhysicalSizeZ": _z_step(z), "PhysicalSizeZUnit": um,
            "Plane": {"PositionZ": z.tolist(), "PositionZUnit": [um] * len(z)}, "Description": json.dumps(meta),
        })  # fmt: skip
    else:
        raise RecordingError(f"Unknown stack format {path.suffix!r} for {path}; use a .zarr or .ome.tif path.")
    return path


def load_stack(path: Path | str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Read a stack written by save_stack: (stack (Z, H, W) uint16, z_um (Z,), attrs incl. pixel_size_um)."""
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"no focal stack at {path}: the path does not exist.")
    if path.suffix == ".zarr":
        group = zarr.open_group(path, mode="r")
        meta = dict(group.attrs.get(ATTRS_KEY) or {})
        if "0" not in group or not meta:
            raise RecordingError(f"{path} is not a deepz focal stack (no image '0' with '{ATTRS_KEY}' attributes).")
        return np.asarray(group["0"]), np.asarray(meta.pop("z_um"), np.float64), meta
    import tifffile

    with tifffile.TiffFile(path) as tif:
        description = tif.ome_metadata and _ome_description(tif.ome_metadata)
        if not description:
            raise RecordingError(f"{path} is not a deepz focal stack (no OME description with its z offsets).")
        meta = json.loads(description)
        stack = tif.asarray()
    return stack, np.asarray(meta.pop("z_um"), np.float64), meta


def is_stack(path: Path | str) -> bool:
    """Whether ``path`` is a focal stack written by save_stack (reads metadata only)."""
    path = Path(path)
    if path.suffix == ".zarr":
        return (path / "zarr.json").is_file() and ATTRS_KEY in zarr.open_group(path, mode="r").attrs
    if path.suffix not in (".tif", ".tiff") or not path.is_file():
        return False
    import tifffile

    with tifffile.TiffFile(path) as tif:
        description = tif.ome_metadata and _ome_description(tif.ome_metadata)
    try:
        return "z_um" in json.loads(description or "")
    except ValueError:
        return False


def _ome_description(ome_xml: str) -> str | None:
    """The Description text of the first OME Image."""
    import xml.etree.ElementTree as ET

    node = ET.fromstring(ome_xml).find(".//{*}Image/{*}Description")
    return None if node is None else node.text
