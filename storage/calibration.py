"""Calibration focal scans on disk: each an OME-NGFF 0.5 image (z, y, x) with its reference neurons beside it.

A calibration scan is the focal stack a live run takes through the focus stage (at the start, then at each
re-calibration); its detected neurons are the readout's reference set. Layout, under any Zarr v3 group
``base`` (a standalone ``CAL.zarr`` root, or a recording's root):

```
calibration/                  group; attrs["deepz_calibration"]: "scans", one ScanRecord per scan, and
                              "images", the path of each scan's image in the collection
<n>/                          NGFF 0.5 image "calibration <i>" of the root's image collection (see
                              storage.collection): array "0" (Z, H, W) uint16, z scale = the scan step,
                              z translation = the first offset (z is relative to the focus of that scan);
                              attrs["deepz_calibration"]: its ScanRecord (stage positions, focus, pause)
<n>/reference/                the reference neurons: 1-D arrays id (int64), z_um, y_um, x_um (float64);
                              attrs["units"] names each column's unit
```

Why beside the recording's raw frames and not inside them: the scan's frames are not at the live focus and
not at the camera's rate, so they would corrupt every reading of ``raw/``; their own image keeps them openable
by napari / ome-zarr with their true z spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage.collection import add_image, write_ome_xml
from storage.layout import compressors

GROUP = "calibration"
ATTRS_KEY = "deepz_calibration"
REFERENCE_GROUP = "reference"
REFERENCE_UNITS = {"id": None, "z_um": "micrometer", "y_um": "micrometer", "x_um": "micrometer"}


@dataclass(frozen=True)
class ScanRecord:
    """What is known of one calibration scan besides its pixels.

    ``frame_index``: the index of the first live frame acquired after the scan (0 for the scan before the
    run); ``pause_s``/``frames_cost``: how long the camera stream was stopped for it and how many frames that
    is at the nominal rate (0 for the scan taken before the stream started).
    """

    index: int
    reason: str  # "start" | "interval" | "drift" | "standalone"
    focus_um: float
    z_um: list[float]
    stage_um: list[float]
    pixel_size_um: float
    frame_index: int
    start_host_s: float
    end_host_s: float
    pause_s: float = 0.0
    frames_cost: int = 0
    n_reference: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StoredScan:
    """One calibration scan read back: its record, the (Z, H, W) stack and the reference table."""

    record: ScanRecord
    stack: np.ndarray
    reference_ids: np.ndarray
    reference_positions_um: np.ndarray  # (N, 3) z, y, x; z relative to record.focus_um


def _z_geometry(z_um: np.ndarray) -> tuple[float, float]:
    """(step, first offset) of the scan's z axis for the NGFF scale/translation."""
    if len(z_um) < 2:
        return 1.0, float(z_um[0])
    return float(np.mean(np.diff(z_um))), float(z_um[0])


def write_scan(
    base: zarr.Group,
    record: ScanRecord,
    stack: np.ndarray,
    reference_ids: np.ndarray,
    reference_positions_um: np.ndarray,
) -> zarr.Group:
    """Store one scan as ``calibration/<record.index>`` under ``base`` and list it in the scans index."""
    stack = np.asarray(stack)
    if stack.ndim != 3 or stack.dtype != np.uint16 or stack.shape[0] != len(record.z_um):
        raise ValueError(f"a calibration scan is (Z, H, W) uint16 with one plane per z, got {stack.dtype} "
                         f"{stack.shape} for {len(record.z_um)} z positions")
    positions = np.asarray(reference_positions_um, np.float64).reshape(-1, 3)
    ids = np.asarray(reference_ids, np.int64).reshape(-1)
    if len(ids) != len(positions):
        raise ValueError(f"{len(ids)} reference ids for {len(positions)} positions")
    parent = base.require_group(GROUP)
    dz, z0 = _z_geometry(np.asarray(record.z_um, np.float64))
    px = record.pixel_size_um
    image = add_image(base, f"calibration {record.index}", "zyx", (dz, px, px), (z0, 0.0, 0.0),
                      {ATTRS_KEY: asdict(record)})
    image.create_array("0", data=stack, chunks=(1, *stack.shape[1:]), compressors=compressors(),
                       dimension_names=("z", "y", "x"))
    write_ome_xml(base)
    table = image.create_group(REFERENCE_GROUP, attributes={"units": REFERENCE_UNITS,
                                                            "z_relative_to_um": record.focus_um})
    table.create_array("id", data=ids)
    for axis, column in enumerate(("z_um", "y_um", "x_um")):
        table.create_array(column, data=positions[:, axis])
    index = parent.attrs.get(ATTRS_KEY, {"scans": [], "images": []})
    parent.attrs[ATTRS_KEY] = {
        "scans": [*index["scans"], asdict(record)],
        "images": [*index["images"], image.basename],
    }
    return image


def scan_records(base: zarr.Group) -> list[ScanRecord]:
    """The records of every scan stored under ``base``, in scan order (empty when there is none)."""
    if GROUP not in base:
        return []
    return [ScanRecord(**r) for r in base[GROUP].attrs.get(ATTRS_KEY, {}).get("scans", [])]


def scan_image_path(base: zarr.Group, index: int) -> str:
    """The path under ``base`` of the image of scan ``index``."""
    records = base[GROUP].attrs[ATTRS_KEY]
    return records["images"][[r["index"] for r in records["scans"]].index(index)]


def read_scan(base: zarr.Group, index: int) -> StoredScan:
    """Scan ``index`` stored under ``base``: record, stack and reference table."""
    image = base[scan_image_path(base, index)]
    table = image[REFERENCE_GROUP]
    positions = np.stack([table[c][:] for c in ("z_um", "y_um", "x_um")], axis=1).reshape(-1, 3)
    return StoredScan(ScanRecord(**image.attrs[ATTRS_KEY]), image["0"][:], table["id"][:], positions)


def read_scans(path: str | Path) -> list[StoredScan]:
    """Every calibration scan of a store (a recording or a standalone calibration), in scan order."""
    root = zarr.open_group(Path(path), mode="r")
    return [read_scan(root, r.index) for r in scan_records(root)]


class CalibrationStore:
    """Appends calibration scans to an existing store (a recording being written) from any one thread.

    The recording writer never touches ``calibration/``, so scans are written beside it, each file fsynced
    and renamed into place like the writer's own (a crash keeps every scan written before it).
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        from storage.synced_store import SyncedLocalStore

        self.path = Path(path)
        self._store = SyncedLocalStore(self.path, fsync=fsync)
        self._root: zarr.Group | None = None

    def write(self, record: ScanRecord, stack: np.ndarray, ids: np.ndarray, positions_um: np.ndarray) -> None:
        """Store one scan with its reference neurons as ``calibration/<record.index>``."""
        if self._root is None:
            self._root = zarr.open_group(self._store, mode="r+", zarr_format=3)
        write_scan(self._root, record, stack, ids, positions_um)
        self._store.sync_directories()
