"""Focal stacks on disk (Zarr or TIFF) and Deep-Z training pairs drawn from them.

Stacks store, per sample, the noisy camera planes ("noisy", uint16) and optionally noise-free targets
("clean" wide-field and "confocal", float32 ADU) at the z positions "z_um". Pairs: input = a noisy plane
z_i, target = the plane z_j = z_i + d (uniform d) or, per pixel, the plane z_i + D(y, x) (non-uniform DPM).
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr

Target = Literal["widefield", "confocal"]
TARGET_ARRAYS = {"widefield": "clean", "confocal": "confocal"}


class StackFileError(Exception):
    """A focal-stack file cannot be used for training or evaluation."""


@dataclass
class FocalStacks:
    """N focal stacks on a shared z grid: noisy inputs and targets, (N, Z, H, W)."""

    noisy: Any  # array-like uint16 (N, Z, H, W)
    targets: dict[str, Any]  # "clean" / "confocal": array-like float32 (N, Z, H, W)
    z_um: np.ndarray  # (Z,)
    pixel_size_um: float
    offset_adu: float
    attrs: dict = field(default_factory=dict)
    positions_um: list[np.ndarray] | None = None  # per stack, (M, 3) ground-truth nuclei (z, y, x)
    digest: str = ""
    psf: np.ndarray | None = None  # (D, S, S) image of one nucleus at each defocus (for the Wiener baseline)
    psf_defocus_um: np.ndarray | None = None  # (D,) defocus = nucleus z - focus z

    @property
    def n(self) -> int:
        """Number of stacks."""
        return int(self.noisy.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Plane shape (H, W)."""
        return tuple(self.noisy.shape[-2:])

    def target(self, kind: Target) -> Any:
        """The target array for a modality; noisy planes stand in for widefield when no clean ones exist."""
        name = TARGET_ARRAYS[kind]
        if name in self.targets:
            return self.targets[name]
        if kind == "widefield":
            return self.noisy
        raise StackFileError(
            f"These stacks hold no '{name}' target planes; render them with `deepz simulate stacks --confocal` "
            "or train with the wide-field target."
        )


def _digest(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()


def write_stacks(
    path: str | Path, noisy: np.ndarray, z_um: np.ndarray, *, pixel_size_um: float, offset_adu: float,
    targets: dict[str, np.ndarray] | None = None, positions_um: list[np.ndarray] | None = None,
    attrs: dict | None = None,
) -> Path:
    """Write stacks as a Zarr v3 group (noisy, targets, z_um, NaN-padded positions_um, attrs)."""
    path = Path(path)
    root = zarr.open_group(str(path), mode="w")
    n, nz, h, w = noisy.shape
    chunks = (1, 1, h, w)
    root.create_array("noisy", data=np.asarray(noisy, dtype=np.uint16), chunks=chunks)
    for name, arr in (targets or {}).items():
        root.create_array(name, data=np.asarray(arr, dtype=np.float32), chunks=chunks)
    root.create_array("z_um", data=np.asarray(z_um, dtype=np.float32))
    if positions_um is not None:
        m = max((len(p) for p in positions_um), default=0)
        pos = np.full((n, m, 3), np.nan, dtype=np.float32)
        for i, p in enumerate(positions_um):
            pos[i, : len(p)] = p
        root.create_array("positions_um", data=pos)
    root.attrs.update({
        "deepz_stacks": 1, "pixel_size_um": float(pixel_size_um), "offset_adu": float(offset_adu),
        **(attrs or {}),
    })
    return path


def _ome_description(ome_xml: str) -> str | None:
    """The Description text of the first image of an OME-TIFF."""
    import xml.etree.ElementTree as ET

    node = ET.fromstring(ome_xml).find(".//{*}Image/{*}Description")
    return None if node is None else node.text


def open_stacks(path: str | Path, *, z_um: np.ndarray | None = None, pixel_size_um: float = 0.325,
                offset_adu: float | None = None) -> FocalStacks:
    """Open stacks written by write_stacks or by `deepz acquire-stack` (Zarr "stack" + "z_um", or TIFF).

    For raw stacks (real microscope), z positions come from a "z_um" array, attribute or TIFF JSON
    description, else from the z_um argument; the camera offset defaults to the 0.1st percentile of the data.
    Raw stacks are their own (noisy) targets.
    """
    path = Path(path)
    if not path.exists():
        raise StackFileError(f"No focal stacks at {path}; render some with `deepz simulate stacks --out {path}`.")
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            data = tif.asarray()
            try:  # `deepz acquire-stack` writes its metadata (z_um, pixel_size_um) as JSON in the OME Description
                meta = json.loads(_ome_description(tif.ome_metadata) if tif.is_ome else tif.pages[0].description)
            except (json.JSONDecodeError, TypeError):
                meta = {}
        meta = meta if isinstance(meta, dict) else {}
        return _raw_stacks(data, _z_from(meta, z_um, path), meta.get("pixel_size_um", pixel_size_um), offset_adu,
                           str(path), meta)
    node = zarr.open(str(path), mode="r")
    if isinstance(node, zarr.Array):
        return _raw_stacks(node, _z_from(node.attrs, z_um, path), pixel_size_um, offset_adu, str(path),
                           dict(node.attrs))
    attrs = dict(node.attrs)
    attrs = {**attrs, **attrs.get("deepz_stack", {})}  # `deepz acquire-stack` OME-Zarr keeps its own beside "ome"
    if "deepz_stacks" not in attrs:
        names = [k for k in ("stack", "data", "raw", "0") if k in node]
        if not names:
            raise StackFileError(
                f"{path} is a Zarr group without focal stacks: expected arrays 'noisy' + 'z_um' (from `deepz "
                "simulate stacks`) or a 'stack' array (Z,H,W) with its z positions in 'z_um'."
            )
        z = np.asarray(node["z_um"]) if "z_um" in node else _z_from(attrs, z_um, path)
        return _raw_stacks(node[names[0]], z, attrs.get("pixel_size_um", pixel_size_um), offset_adu,
                           str(path), attrs)
    positions = None
    if "positions_um" in node:
        pos = np.asarray(node["positions_um"])
        positions = [p[~np.isnan(p[:, 0])] for p in pos]
    targets = {k: node[k] for k in ("clean", "confocal") if k in node}
    return FocalStacks(
        noisy=node["noisy"], targets=targets, z_um=np.asarray(node["z_um"], dtype=np.float32),
        pixel_size_um=float(attrs["pixel_size_um"]), offset_adu=float(attrs["offset_adu"]), attrs=attrs,
        positions_um=positions, digest=_digest(attrs, node["noisy"].shape),
        psf=np.asarray(node["psf"]) if "psf" in node else None,
        psf_defocus_um=np.asarray(node["psf_defocus_um"]) if "psf_defocus_um" in node else None,
    )


def _z_from(attrs: Any, z_um: np.ndarray | None, path: Path) -> np.ndarray:
    if "z_um" in attrs:
        return np.asarray(attrs["z_um"], dtype=np.float32)
    if z_um is None:
        raise StackFileError(f"{path} does not say its z positions; add a 'z_um' attribute or pass z_um.")
    return np.asarray(z_um, dtype=np.float32)


def _raw_stacks(arr: Any, z_um: np.ndarray | None, pixel_size_um: float, offset_adu: float | None,
                source: str, attrs: dict) -> FocalStacks:
    data = np.asarray(arr)
    if data.ndim == 3:
        data = data[None]
    if data.ndim != 4 or z_um is None or len(z_um) != data.shape[1]:
        raise StackFileError(
            f"{source}: need stacks shaped (Z,H,W) or (N,Z,H,W) with one z position per plane; got shape "
            f"{data.shape} and {None if z_um is None else len(z_um)} z positions."
        )
    order = np.argsort(z_um)
    data = data[:, order].astype(np.uint16)
    offset = float(np.percentile(data[:, :, ::8, ::8], 0.1)) if offset_adu is None else offset_adu
    return FocalStacks(noisy=data, targets={}, z_um=np.asarray(z_um, np.float32)[order],
                       pixel_size_um=float(pixel_size_um), offset_adu=offset, attrs=attrs,
                       digest=_digest(source, data.shape, float(data.astype(np.float64).sum())))


def scale_sample_indices(n: int) -> np.ndarray:
    """Which of n stacks the normalisation scale looks at (up to 8, evenly spread)."""
    return np.linspace(0, n - 1, min(n, 8)).astype(int)


def bright_level(sample: np.ndarray, offset_adu: float, percentile: float = 99.9) -> float:
    """A robust bright level above offset (ADU) of sampled raw pixels: the normalisation scale."""
    return max(float(np.percentile(sample, percentile)) - offset_adu, 1.0)


def intensity_scale(stacks: Any, percentile: float = 99.9) -> float:
    """The normalisation scale of the noisy planes or pair inputs (every 4th pixel of up to 8 stacks)."""
    sample = np.concatenate([np.asarray(stacks.noisy[i])[..., ::4, ::4].ravel()
                             for i in scale_sample_indices(stacks.n)])
    return bright_level(sample, stacks.offset_adu, percentile)


@dataclass(frozen=True)
class PairConfig:
    """How training pairs are drawn."""

    crop: int = 128
    axial_range_um: float = 10.0
    input_z_um: float = 3.0  # input planes are drawn from |z_i| <= input_z_um
    nonuniform_fraction: float = 0.25
    max_slope: float = 0.15  # um of DPM per um laterally, for tilted training DPMs
    augment: bool = True


class CropSampler(ABC):
    """What every training-pair sampler shares: a seeded, resumable RNG, batching, rotation/flip augmentation."""

    def __init__(self, config: PairConfig, seed: int) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)

    def state(self) -> dict:
        """RNG state (JSON-able), for resumable training."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore the RNG state."""
        self.rng.bit_generator.state = state

    def sample(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, 2, crop, crop) generator inputs [image, DPM / axial_range] and (B, 1, crop, crop) targets."""
        pairs = [self._draw() for _ in range(batch)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    @abstractmethod
    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One (2, crop, crop) input and its (1, crop, crop) target."""

    def _augmented(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same random rotation by 90-degree steps and flip of input and target (when augment is on)."""
        if self.config.augment:
            k, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            x, y = (dihedral(a, k, flip) for a in (x, y))
        return np.ascontiguousarray(x), np.ascontiguousarray(y)


def dihedral(a: np.ndarray, k: int, flip: bool) -> np.ndarray:
    """The augmentation of a (..., H, W) crop: rotation by k * 90 degrees, then a left-right flip."""
    a = np.rot90(a, k, axes=(-2, -1))
    return a[..., ::-1] if flip else a


def input_planes(z_um: np.ndarray, config: PairConfig) -> np.ndarray:
    """Indices of the planes pairs may take their input from (|z| <= input_z_um)."""
    return np.flatnonzero(np.abs(z_um) <= config.input_z_um + 1e-6)


def reach(z_um: np.ndarray, i: int, config: PairConfig) -> np.ndarray:
    """Indices of the target planes within the axial range of input plane i (a contiguous run: z is sorted)."""
    return np.flatnonzero(np.abs(z_um - z_um[i]) <= config.axial_range_um + 1e-6)


def check_drawable(n_stacks: int, shape: tuple[int, int], n_inputs: int, config: PairConfig) -> None:
    """Raise StackFileError when no pair can be drawn (no stacks, crops larger than planes, no input plane)."""
    h, w = shape
    if not n_inputs or not n_stacks or min(h, w) < config.crop:
        raise StackFileError(
            f"Cannot draw pairs: {n_stacks} stacks of {h}x{w}, crop {config.crop}, "
            f"{n_inputs} planes within +/-{config.input_z_um} um. Use larger or more stacks."
        )


class PairSampler(CropSampler):
    """Draws (input plane, DPM, target) crops from focal stacks, already normalised, as float32 numpy."""

    def __init__(self, stacks: FocalStacks, config: PairConfig, *, offset_adu: float, scale_adu: float,
                 target: Target = "widefield", indices: list[int] | None = None, seed: int = 0) -> None:
        super().__init__(config, seed)
        self.stacks = stacks
        self.offset, self.scale = offset_adu, scale_adu
        self.target = stacks.target(target)
        self.indices = list(range(stacks.n)) if indices is None else list(indices)
        self.input_planes = input_planes(stacks.z_um, config)
        check_drawable(len(self.indices), stacks.shape, len(self.input_planes), config)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _stack(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw (noisy, target) planes of stack n, cached in memory in their stored dtypes."""
        if n not in self._cache:
            self._cache[n] = (np.asarray(self.stacks.noisy[n]), np.asarray(self.target[n]))
        return self._cache[n]

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng, z = self.config, self.rng, self.stacks.z_um
        noisy, tgt = self._stack(int(rng.choice(self.indices)))
        h, w = noisy.shape[-2:]
        y0, x0 = rng.integers(0, h - cfg.crop + 1), rng.integers(0, w - cfg.crop + 1)
        win = (slice(y0, y0 + cfg.crop), slice(x0, x0 + cfg.crop))
        i = int(rng.choice(self.input_planes))
        reach_i = reach(z, i, cfg)
        if rng.random() < cfg.nonuniform_fraction:
            j_map = self._nonuniform_planes(i, reach_i, cfg.crop)
            target = np.take_along_axis(tgt[(slice(None), *win)], j_map[None], axis=0)[0].astype(np.float32)
            dpm = z[j_map] - z[i]
        else:
            j = int(rng.choice(reach_i))
            target = tgt[(j, *win)].astype(np.float32)
            dpm = np.full((cfg.crop, cfg.crop), z[j] - z[i], dtype=np.float32)
        image = (noisy[(i, *win)].astype(np.float32) - self.offset) / self.scale
        x = np.stack([image, dpm / cfg.axial_range_um]).astype(np.float32)
        y = ((target - self.offset) / self.scale)[None].astype(np.float32)
        return self._augmented(x, y)

    def _nonuniform_planes(self, i: int, reach: np.ndarray, crop: int) -> np.ndarray:
        """Per-pixel target plane indices of a random tilted + curved surface, snapped to the z grid."""
        rng, z, px = self.rng, self.stacks.z_um, self.stacks.pixel_size_um
        half = crop * px / 2
        yy, xx = np.meshgrid(np.linspace(-half, half, crop), np.linspace(-half, half, crop), indexing="ij")
        lo, hi = z[reach[0]] - z[i], z[reach[-1]] - z[i]
        sy, sx = rng.uniform(-self.config.max_slope, self.config.max_slope, 2)
        curv = rng.uniform(-1, 1) * (hi - lo) / 4 / half**2
        surf = sy * yy + sx * xx + curv * (yy**2 + xx**2)
        surf += rng.uniform(lo - surf.min(), max(hi - surf.max(), lo - surf.min()))
        want = np.clip(z[i] + surf, z[reach[0]], z[reach[-1]])
        return np.abs(z[None, None, :] - want[..., None]).argmin(axis=-1)
