"""npe2 reader: a deepz recording, tracks store, calibration store or focal stack as napari layers.

Images keep their physical scale (um, s) and units; every layer shares one world: t in seconds from the
first frame, z in um from the focus, y/x in um. Raw frames lie at z = 0 (the focal plane), volumes at their
planes; tracks are a Tracks layer (track_id, t, z, y, x), neurons Points with their IDs and dF/F, and the
traces ride in the tracks layer's metadata for the Traces dock widget.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from storage import RecordingReader, layout
from storage.calibration import read_scan, scan_image_path, scan_records
from storage.stack_file import is_stack, load_stack

LayerData = tuple[Any, dict[str, Any], str]
TRACES_KEY = "deepz_traces"
"""Layer metadata key of the traces: {"ids": (M,), "time_s": (T,), "dff": (M, T)} (read by TracesWidget)."""


def get_reader(path: str | list[str]) -> Callable[[str], list[LayerData]] | None:
    """The reader for ``path`` when it is a store deepz wrote (else None, leaving it to other plugins)."""
    path = Path(path[0] if isinstance(path, list) else path)
    try:
        if is_stack(path):
            return _read_stack
        if (path / "zarr.json").is_file() and layout.ATTRS_KEY in zarr.open_group(path, mode="r").attrs:
            return read
    except Exception:  # noqa: BLE001 - unreadable or not a group deepz wrote: another plugin's to try
        return None
    return None


def read(path: str | list[str]) -> list[LayerData]:
    """Layers of a recording / tracks store (deepz format) or a calibration store."""
    path = Path(path[0] if isinstance(path, list) else path)
    root = zarr.open_group(path, mode="r")
    if root.attrs[layout.ATTRS_KEY].get("format") != layout.FORMAT_NAME:
        return _scan_layers(root)  # a standalone calibration store: scans only
    reader = RecordingReader(path)
    layers = []
    if reader.n_frames:
        data, meta, kind = _image(root[layout.RAW_IMAGE], "raw", z_at_focus=True)
        layers.append((data[: reader.n_frames], meta, kind))
    if reader.has_volumes and len(reader.volume_indices):
        data, meta, kind = _image(root[layout.VOLUME_IMAGE], "volumes")
        layers.append((data[: len(reader.volumes)], meta, kind))  # rows past the commit point stay hidden
    layers += _scan_layers(root)
    layers += _track_layers(reader)
    return layers


def _ngff(group: zarr.Group) -> tuple[list[str], list[str], list[float], list[float]]:
    """(axis names, units, scale, translation) of an NGFF image's first dataset."""
    multiscale = group.attrs["ome"]["multiscales"][0]
    transforms = {t["type"]: t[t["type"]] for t in multiscale["datasets"][0]["coordinateTransformations"]}
    names = [a["name"] for a in multiscale["axes"]]
    return (
        names,
        [a.get("unit") for a in multiscale["axes"]],
        list(transforms["scale"]),
        list(transforms.get("translation", [0.0] * len(names))),
    )


def _image(group: zarr.Group, name: str, *, z_at_focus: bool = False) -> LayerData:
    """An Image layer of an NGFF image; ``z_at_focus`` gives a (t, y, x) image a z axis at 0 um."""
    import dask.array as da

    names, units, scale, translate = _ngff(group)
    data = da.from_zarr(group[group.attrs["ome"]["multiscales"][0]["datasets"][0]["path"]])
    if z_at_focus and names == ["t", "y", "x"]:
        data, names = data[:, None], ["t", "z", "y", "x"]
        units, scale, translate = [units[0], "micrometer", *units[1:]], [scale[0], 1.0, *scale[1:]], [
            translate[0], 0.0, *translate[1:]]  # fmt: skip
    meta = {"name": name, "scale": scale, "translate": translate, "units": units, "axis_labels": names,
            "blending": "additive", "metadata": {"path": str(group.store_path)}}  # fmt: skip
    return data, meta, "image"


def _scan_layers(root: zarr.Group) -> list[LayerData]:
    """Each calibration scan as an Image (z, y, x) and its reference neurons as Points with their IDs."""
    layers = []
    for record in scan_records(root):
        name = f"calibration {record.index}"
        layers.append(_image(root[scan_image_path(root, record.index)], name))
        scan = read_scan(root, record.index)
        layers.append((
            scan.reference_positions_um,
            {"name": f"{name} reference", "features": {"id": scan.reference_ids}, "text": {"string": "{id}"},
             "size": 2.0, "face_color": "transparent", "border_color": "yellow", "units": "micrometer",
             "axis_labels": ("z", "y", "x")},
            "points",
        ))  # fmt: skip
    return layers


def _track_layers(reader: RecordingReader) -> list[LayerData]:
    """Tracks (track_id, t, z, y, x) and Points (t, z, y, x) of the tracked neurons (t: frame x interval)."""
    tracks = reader.tracks()
    if not len(tracks["t"]):
        return []
    order = np.lexsort((tracks["t"], tracks["id"]))  # napari wants each track's points in time order
    columns = {k: np.asarray(v)[order] for k, v in tracks.items()}
    position = np.column_stack([columns[c] for c in ("t", "z", "y", "x")]).astype(np.float64)
    scale = [reader.frame_interval_s, 1.0, 1.0, 1.0]
    ids, t, dff = reader.traces()
    traces = {"ids": ids, "time_s": reader.frame_times_s(t), "dff": dff}
    common = {"scale": scale, "units": ("second", "micrometer", "micrometer", "micrometer"),
              "axis_labels": ("t", "z", "y", "x")}  # fmt: skip
    features = {"id": columns["id"], "dff": columns["dff"], "intensity": columns["intensity"]}
    return [
        (np.column_stack([columns["id"], position]), {"name": "tracks", "features": features,
         "tail_length": 50, "metadata": {TRACES_KEY: traces}, **common}, "tracks"),
        (position, {"name": "neurons", "features": features, "text": {"string": "{id}", "size": 8},
         "size": 2.0, "face_color": "transparent", "border_color": "cyan", **common}, "points"),
    ]  # fmt: skip


def _read_stack(path: str | list[str]) -> list[LayerData]:
    """A focal stack (OME-Zarr or OME-TIFF written by `deepz acquire-stack`) at its physical scale."""
    path = Path(path[0] if isinstance(path, list) else path)
    stack, z_um, attrs = load_stack(path)
    dz = float(np.mean(np.diff(z_um))) if len(z_um) > 1 else 1.0
    px = float(attrs["pixel_size_um"])
    meta = {"name": path.name, "scale": [dz, px, px], "translate": [float(z_um[0]), 0.0, 0.0],
            "units": ("micrometer",) * 3, "axis_labels": ("z", "y", "x"),
            "metadata": {"z_um": z_um}}  # fmt: skip
    return [(stack, meta, "image")]

