"""What a decoded message's named arrays, stats and meta must be (wire.messages spec) before anyone draws it.

The wire decoder checks framing, header fields and buffer sizes; this module checks content: each known
array's dimensions, dtype and finiteness, the consistency of arrays that describe the same neurons or the
same time window, and the meta fields the viewer uses for geometry. Anything else is a MessageError, so a
malformed message is rejected in one place instead of failing somewhere inside the views.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from wire.messages import Message


class MessageError(ValueError):
    """A received message does not follow the spec (wire.messages)."""


class ArrayRule(NamedTuple):
    """Dimensions, allowed numpy dtype kinds and whether every value must be finite (NaN allowed or not)."""

    ndim: int
    kinds: str
    finite: bool = False


ARRAY_RULES: dict[str, ArrayRule] = {
    "frame": ArrayRule(2, "u"),
    "volume": ArrayRule(3, "u"),
    "track_ids": ArrayRule(1, "iu"),
    "track_positions_um": ArrayRule(2, "f", finite=True),
    "track_dff": ArrayRule(1, "f"),  # NaN: no readout value for that neuron now
    "track_confidence": ArrayRule(1, "f"),
    "trace_ids": ArrayRule(1, "iu"),
    "traces_dff": ArrayRule(2, "f"),  # NaN: the neuron was not tracked at that time
    "trace_t": ArrayRule(1, "f", finite=True),
}
NUMERIC_KINDS = "biuf"  # any array, named or not: booleans, integers, floats (never objects or strings)
GEOMETRY_META = ("pixel_size_um", "volume_pixel_size_um")


def _fail(text: str) -> None:
    raise MessageError(text)


def _is_real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_array(name: str, a: np.ndarray) -> None:
    if a.dtype.kind not in NUMERIC_KINDS:
        _fail(f"array {name!r} has dtype {a.dtype}; arrays are numbers")
    rule = ARRAY_RULES.get(name)
    if rule is None:
        return
    if a.ndim != rule.ndim or a.dtype.kind not in rule.kinds:
        _fail(f"array {name!r} is {a.ndim}-D {a.dtype}; the spec has {rule.ndim}-D of kind {rule.kinds!r}")
    if rule.finite and not np.isfinite(a).all():
        _fail(f"array {name!r} holds NaN or infinite values")
    if a.dtype.kind == "f" and np.isinf(a).any():
        _fail(f"array {name!r} holds infinite values")


def _same(what: str, *sizes: tuple[str, int | None]) -> None:
    known = [(name, size) for name, size in sizes if size is not None]
    if len({size for _, size in known}) > 1:
        _fail(f"{what} disagree: " + ", ".join(f"{name} {size}" for name, size in known))


def _dim(arrays: Mapping[str, np.ndarray], name: str, axis: int) -> int | None:
    return arrays[name].shape[axis] if name in arrays else None


def check_content(message: Message) -> None:
    """Raise MessageError unless ``message`` follows the spec's array, stats and meta rules."""
    a = message.arrays
    for name, array in a.items():
        _check_array(name, array)
    for name in ("frame", "volume"):
        if name in a and a[name].size == 0:
            _fail(f"array {name!r} is empty ({a[name].shape})")
    if "track_positions_um" in a and a["track_positions_um"].shape[1] != 3:
        _fail(f"track_positions_um is {a['track_positions_um'].shape}; the spec has (N, 3) z, y, x")
    _same("tracked-neuron counts", ("track_ids", _dim(a, "track_ids", 0)),
          ("track_positions_um", _dim(a, "track_positions_um", 0)), ("track_dff", _dim(a, "track_dff", 0)),
          ("track_confidence", _dim(a, "track_confidence", 0)))  # fmt: skip
    _same("trace rows", ("trace_ids", _dim(a, "trace_ids", 0)), ("traces_dff", _dim(a, "traces_dff", 0)))
    _same("trace window lengths", ("traces_dff", _dim(a, "traces_dff", 1)),
          ("trace_t", _dim(a, "trace_t", 0)))  # fmt: skip
    if not isinstance(message.stats, dict) or not isinstance(message.meta, dict):
        _fail("message stats and meta must be JSON objects")
    for key, value in message.stats.items():
        if not (value is None or isinstance(value, bool | int | float | str)):
            _fail(f"stats[{key!r}] is a {type(value).__name__}; stats are a flat object of numbers and text")
    _check_meta(message.meta, _dim(a, "volume", 0))


def _check_meta(meta: Mapping[str, Any], planes: int | None) -> None:
    for key in GEOMETRY_META:
        value = meta.get(key)
        if value is not None and not (_is_real(value) and value > 0):
            _fail(f"meta[{key!r}] = {value!r}; it must be a positive number of um")
    planes_um = meta.get("planes_um")
    if planes_um is None:
        return
    if not isinstance(planes_um, list) or not all(_is_real(z) for z in planes_um):
        _fail("meta['planes_um'] must be a list of finite numbers (um)")
    if planes is not None and len(planes_um) != planes:
        _fail(f"meta['planes_um'] lists {len(planes_um)} planes but the volume has {planes}")
