"""A store of several NGFF 0.5 images under one root, in the layout every OME tool opens whole.

The root is a bioformats2raw-layout collection (the NGFF 0.5 multi-image root): ``zarr.json`` with
``ome["bioformats2raw.layout"] = 3``, images in consecutively numbered groups ``0/``, ``1/``, ... (what
ome-zarr-models and ome-zarr-py's finder walk), listed by path in ``OME/zarr.json`` ``series`` (yaozarrs)
and as ``Image:<path>`` in ``OME/METADATA.ome.xml`` with their names and physical sizes (napari-ome-zarr).
Other groups and arrays beside them (tables, the run's metadata) are left alone by these tools.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from storage.ngff import ngff_image_attrs

OME_GROUP = "OME"
OME_XML = f"{OME_GROUP}/METADATA.ome.xml"
LAYOUT = {"version": "0.5", "bioformats2raw.layout": 3}
_OME_NS = "http://www.openmicroscopy.org/Schemas/OME/2016-06"
_XML_UNITS = {"micrometer": "µm", "second": "s", "millisecond": "ms"}


def init_collection(root: zarr.Group) -> None:
    """Mark ``root`` as a multi-image collection (idempotent: images already listed stay)."""
    attrs = dict(root.attrs.get("ome") or {})
    if attrs.get("bioformats2raw.layout") != 3:
        root.update_attributes({"ome": {**attrs, **LAYOUT}})
    if OME_GROUP not in root:
        root.create_group(OME_GROUP, attributes={"ome": {"version": "0.5", "series": []}})
        write_ome_xml(root)


def series(root: zarr.Group) -> list[str]:
    """Paths of the collection's images, in order ([] when ``root`` is no collection)."""
    if OME_GROUP not in root:
        return []
    return list(root[OME_GROUP].attrs.get("ome", {}).get("series", []))


def image_name(group: zarr.Group) -> str:
    """The NGFF multiscales name of an image group."""
    return group.attrs["ome"]["multiscales"][0].get("name", "")


def image_path(root: zarr.Group, name: str) -> str | None:
    """Path of the image named ``name`` (its multiscales name), or None when the collection has none."""
    return next((p for p in series(root) if image_name(root[p]) == name), None)


def add_image(
    root: zarr.Group,
    name: str,
    axes: str,
    scale: Sequence[float],
    translation: Sequence[float],
    attributes: dict | None = None,
) -> zarr.Group:
    """Create the next numbered image group (array ``0`` still to be made by the caller) and list it."""
    init_collection(root)
    paths = series(root)
    path = str(len(paths))
    group = root.create_group(
        path, attributes={**ngff_image_attrs(name, axes, scale, translation), **(attributes or {})}
    )
    root[OME_GROUP].update_attributes({"ome": {"version": "0.5", "series": [*paths, path]}})
    return group


def set_time_axis(group: zarr.Group, step_s: float, t0_s: float) -> None:
    """Set the t scale and translation of an image whose first axis is t (once volume times are known)."""
    multiscale = group.attrs["ome"]["multiscales"][0]
    axes = "".join(a["name"] for a in multiscale["axes"])
    transforms = {t["type"]: t[t["type"]] for t in multiscale["datasets"][0]["coordinateTransformations"]}
    scale = [step_s, *transforms["scale"][1:]]
    translation = [t0_s, *transforms.get("translation", [0.0] * len(axes))[1:]]
    group.update_attributes(ngff_image_attrs(multiscale["name"], axes, scale, translation))


def write_ome_xml(root: zarr.Group) -> None:
    """(Re)write ``OME/METADATA.ome.xml``: one Image per listed image, with its shape and physical sizes."""
    ome = ET.Element("OME", {"xmlns": _OME_NS, "Creator": "deepz-live"})
    for path in series(root):
        ome.append(_xml_image(root[path], path))
    data = ET.tostring(ome, encoding="utf-8", xml_declaration=True)
    store = root.store_path.store
    key = f"{root.store_path.path}/{OME_XML}".lstrip("/")
    sync(store.set(key, default_buffer_prototype().buffer.from_bytes(data)))


def _xml_image(group: zarr.Group, path: str) -> ET.Element:
    multiscale = group.attrs["ome"]["multiscales"][0]
    dataset = multiscale["datasets"][0]
    array = group[dataset["path"]]
    axes = [a["name"] for a in multiscale["axes"]]
    scale = next(t["scale"] for t in dataset["coordinateTransformations"] if t["type"] == "scale")
    sizes = {a: max(int(n), 1) for a, n in zip(axes, array.shape, strict=True)}
    pixels = {
        "ID": f"Pixels:{path}",
        "DimensionOrder": "XYZCT",
        "Type": str(array.dtype),
        **{f"Size{a.upper()}": str(sizes.get(a, 1)) for a in "xyzct"},
    }
    for a, s, axis in zip(axes, scale, multiscale["axes"], strict=True):
        unit = _XML_UNITS.get(axis.get("unit", ""), axis.get("unit", ""))
        if a in "xyz":
            pixels |= {f"PhysicalSize{a.upper()}": repr(float(abs(s))), f"PhysicalSize{a.upper()}Unit": unit}
        elif a == "t":
            pixels |= {"TimeIncrement": repr(float(s)), "TimeIncrementUnit": unit}
    image = ET.Element("Image", {"ID": f"Image:{path}", "Name": multiscale.get("name", path)})
    ET.SubElement(ET.SubElement(image, "Pixels", pixels), "MetadataOnly")
    return image
