"""OME-NGFF 0.5 attributes of a single-resolution image: axes with units, scale and translation."""

from __future__ import annotations

from collections.abc import Sequence


def _axis(name: str) -> dict:
    if name == "t":
        return {"name": "t", "type": "time", "unit": "second"}
    return {"name": name, "type": "space", "unit": "micrometer"}


def ngff_image_attrs(name: str, axes: str, scale: Sequence[float], translation: Sequence[float]) -> dict:
    """OME-NGFF 0.5 ``ome`` attributes of a single-resolution image group whose array is ``0``."""
    transforms = [{"type": "scale", "scale": [float(s) for s in scale]}]
    if any(translation):
        transforms.append({"type": "translation", "translation": [float(v) for v in translation]})
    multiscale = {
        "name": name,
        "axes": [_axis(a) for a in axes],
        "datasets": [{"path": "0", "coordinateTransformations": transforms}],
    }
    return {"ome": {"version": "0.5", "multiscales": [multiscale]}}
