"""Read anisotropic volumes (deepz recordings, OME-Zarr / Zarr, TIFF, .npy z-stacks) and write restored ones.

Axis orders are strings over t, c, z, y, x (e.g. "cxyz" for targettrack data_points frames, "xyz" for
data_mask frames); volumes come out as (Z, Y, X). The output is an OME-Zarr image (Zarr v3, NGFF 0.5).
It joins storage (recordings, output paths) to the Self-Net stage (infer.isotropic), hence lives in deepz.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.storage import LocalStore

from infer.isotropic.errors import IsotropicInputError
from storage import RecordingReader, layout
from storage.ngff import ngff_image_attrs
from storage.output_path import claim_output

SUFFIXES = (".zarr", ".npy", ".tif", ".tiff")


@dataclass
class VolumeSource:
    """Anisotropic (Z, Y, X) volumes read on demand, with their voxel size and where the first plane lies."""

    path: Path
    count: int
    read: Callable[[int], np.ndarray]
    voxel_um: tuple[float, float, float]
    dtype: np.dtype
    z0_um: float = 0.0
    frame_indices: list[int] | None = None  # recordings: the frame each volume belongs to
    attrs: dict[str, Any] = field(default_factory=dict)
    time_axis_s: tuple[float, float] = (1.0, 0.0)  # (step, first time) of the volumes' NGFF t axis

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self.read(i) for i in range(self.count))

    def training_indices(self, n: int) -> list[int]:
        """Up to n volume indices spread evenly over the source (the middle one when n = 1)."""
        n = max(1, min(n, self.count))
        return sorted({round(v) for v in np.linspace(0, self.count - 1, n + 2)[1:-1]})


def parse_voxel(text: str | None) -> tuple[float, float, float] | None:
    """'DZ,DY,DX' in um -> a tuple, or None."""
    if text is None:
        return None
    try:
        voxel = tuple(float(v) for v in text.split(","))
    except ValueError:
        voxel = ()
    if len(voxel) != 3 or min(voxel) <= 0:
        raise IsotropicInputError(
            f"--voxel-um takes three positive numbers DZ,DY,DX in um, e.g. 1.5,0.1625,0.1625; got {text!r}"
        )
    return voxel  # type: ignore[return-value]


def to_tzyx(array: Any, axes: str, channel: int | None) -> np.ndarray:
    """A (T, Z, Y, X) view of an array whose axes are named by `axes` (c is removed by choosing `channel`)."""
    axes = axes.lower()
    if len(set(axes)) != len(axes) or not set(axes) <= set("tczyx") or not {"z", "y", "x"} <= set(axes):
        raise IsotropicInputError(
            f"axis order {axes!r} must name z, y and x once each, plus optionally t and c"
        )
    if len(axes) != array.ndim:
        raise IsotropicInputError(
            f"the data has {array.ndim} dimensions {tuple(array.shape)} but the axis order {axes!r} names "
            f"{len(axes)}; pass --axes with one letter per dimension (e.g. zyx, xyz, cxyz, tzyx)"
        )
    array = np.asarray(array[...])  # a memory map stays one; a Zarr array is read
    if "c" in axes:
        n_channels = array.shape[axes.index("c")]
        if channel is None and n_channels > 1:
            raise IsotropicInputError(
                f"the data has {n_channels} channels (axis c); choose one with --channel"
            )
        if not 0 <= (channel or 0) < n_channels:
            raise IsotropicInputError(f"--channel {channel} is out of range for {n_channels} channels")
        array = np.take(array, channel or 0, axis=axes.index("c"))
        axes = axes.replace("c", "")
    elif channel not in (None, 0):
        raise IsotropicInputError(f"--channel {channel} given but the axis order {axes!r} has no c axis")
    if "t" not in axes:
        array, axes = array[None], "t" + axes
    return np.transpose(array, [axes.index(a) for a in "tzyx"])


def _recording(path: Path, voxel_um: tuple[float, float, float] | None) -> VolumeSource:
    reader = RecordingReader(path)
    if not reader.has_volumes or len(reader.volume_indices) == 0 or reader.planes_um is None:
        raise IsotropicInputError(
            f"the recording {path} holds no volumes; compute them first with "
            f"`deepz replay {path} --out NEW.zarr`"
        )
    planes = reader.planes_um
    if len(planes) < 2:
        raise IsotropicInputError(
            f"the recording's volumes have {len(planes)} plane; isotropic restoration needs z-stacks"
        )
    steps = np.diff(planes)
    if np.ptp(steps) > 0.01 * abs(steps.mean()) or steps.mean() <= 0:
        raise IsotropicInputError(
            f"the recording's planes {planes.tolist()} um are not evenly spaced and increasing; isotropic "
            "restoration needs a regular z grid"
        )
    voxel = voxel_um or (float(steps.mean()), reader.volume_pixel_size_um, reader.volume_pixel_size_um)
    frames = [int(t) for t in reader.volume_indices]
    return VolumeSource(
        path,
        len(frames),
        lambda i: reader.volume(frames[i]),
        voxel,
        np.dtype(np.uint16),
        float(planes[0]),
        frames,
        {
            "recording": {"planes_um": planes.tolist(), "model": reader.attrs.get("model")},
            "frame_times_s": reader.volume_times_s.tolist(),
        },
        layout.volume_time_axis(reader.volume_indices, reader.frame_interval_s),
    )


def _ome_image(group: zarr.Group) -> tuple[str, str, list[float], list[float]]:
    """(array path, axis letters, scale, translation) of the first dataset of OME-NGFF multiscales."""
    multiscales = (group.attrs.get("ome") or {}).get("multiscales") or group.attrs.get("multiscales")
    if not multiscales:
        raise IsotropicInputError(
            f"{group.store} is a Zarr group without OME-NGFF multiscales metadata; pass the array inside it"
        )
    dataset = multiscales[0]["datasets"][0]
    transforms = {t["type"]: t for t in dataset.get("coordinateTransformations", [])}
    names = "".join(a["name"][0].lower() for a in multiscales[0]["axes"])
    return (
        dataset["path"],
        names,
        transforms.get("scale", {}).get("scale", []),
        transforms.get("translation", {}).get("translation", []),
    )


def open_source(
    path: str | Path,
    *,
    voxel_um: tuple[float, float, float] | None = None,
    axes: str | None = None,
    channel: int | None = None,
) -> VolumeSource:
    """Open a deepz recording, an OME-Zarr / Zarr array, a TIFF or a .npy z-stack as a VolumeSource."""
    path = Path(path)
    if not path.exists():
        raise IsotropicInputError(f"no input at {path}; check the path")
    if path.suffix.lower() not in SUFFIXES and not (path / "zarr.json").is_file():
        raise IsotropicInputError(f"{path}: unknown input type; use one of {', '.join(SUFFIXES)}")
    z0 = 0.0
    time_axis = (1.0, 0.0)
    stored_voxel: tuple[float, float, float] | None = None
    if (path / "zarr.json").is_file():
        node = zarr.open(LocalStore(path, read_only=True), mode="r")
        if isinstance(node, zarr.Group) and layout.ATTRS_KEY in node.attrs:
            return _recording(path, voxel_um)
        if isinstance(node, zarr.Group):
            array_path, names, scale, translation = _ome_image(node)
            node = node[array_path]
            axes = axes or names
            named = dict(zip(names, scale, strict=False))
            if {"z", "y", "x"} <= set(named):
                stored_voxel = (named["z"], named["y"], named["x"])
            z0 = dict(zip(names, translation, strict=False)).get("z", 0.0)
            time_axis = (named.get("t", 1.0), dict(zip(names, translation, strict=False)).get("t", 0.0))
        array: Any = node
        dim_names = getattr(node.metadata, "dimension_names", None) or ()  # Zarr v3 arrays may name axes
        axes = axes or "".join(str(n)[0] for n in dim_names if n) or None
    elif path.suffix.lower() == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        import tifffile

        array = tifffile.imread(path)
    axes = axes or {3: "zyx", 4: "tzyx"}.get(array.ndim)
    if axes is None:
        raise IsotropicInputError(
            f"{path} has shape {tuple(array.shape)}: isotropic restoration needs a z-stack; give its "
            "axis order with --axes (e.g. zyx, xyz, cxyz) or pass 3D data"
        )
    tzyx = to_tzyx(array, axes, channel)
    voxel = voxel_um or stored_voxel
    if voxel is None:
        raise IsotropicInputError(
            f"{path} does not say its voxel size; pass --voxel-um DZ,DY,DX in um (e.g. 1.5,0.1625,0.1625)"
        )
    return VolumeSource(
        path, tzyx.shape[0], lambda i: np.asarray(tzyx[i]), voxel, np.dtype(array.dtype), z0,
        time_axis_s=time_axis,
    )


def output_dtype(dtype: np.dtype) -> np.dtype:
    """Integer inputs keep their type (restored values rounded and clipped to it), others become float32."""
    return dtype if np.issubdtype(dtype, np.integer) else np.dtype(np.float32)


def cast(volume: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer type's range, or convert to float32."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(volume), info.min, info.max).astype(dtype)
    return volume.astype(dtype)


def create_output(
    path: str | Path,
    *,
    n_volumes: int,
    shape: Sequence[int],
    dtype: np.dtype,
    voxel_um: Sequence[float],
    z0_um: float,
    attrs: dict[str, Any],
    overwrite: bool,
    inputs: Sequence[str | Path] = (),
    time_axis_s: tuple[float, float] = (1.0, 0.0),
) -> zarr.Array:
    """An empty OME-Zarr image (t, z, y, x) at `path` with its NGFF scale (t: the source's ``time_axis_s``,
    step and first time in s); refuses an existing path or input."""
    path = Path(path)
    claim_output(path, overwrite=overwrite, inputs=inputs)
    root = zarr.open_group(LocalStore(path), mode="w-", zarr_format=3)
    root.attrs.update(
        ngff_image_attrs("isotropic", "tzyx", (time_axis_s[0], *voxel_um), (time_axis_s[1], z0_um, 0.0, 0.0))
        | {"deepz_isotropic": attrs}
    )
    z, y, x = shape
    return root.create_array(
        "0",
        shape=(n_volumes, z, y, x),
        chunks=(1, min(z, 32), y, x),
        dtype=dtype,
        compressors=layout.compressors("zstd"),
        fill_value=0,
        dimension_names=("t", "z", "y", "x"),
    )
