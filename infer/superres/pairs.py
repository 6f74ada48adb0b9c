"""Registered (low-resolution input, high-resolution target) image pairs read from disk (rendered by the
simulator in deepz.lab.sim_pairs), and training crops drawn from them in the Deep-Z generator's input format (image + zero DPM).

A pairs store is a Zarr group holding ``input`` (N, h, w) raw camera frames and ``target`` (N, H, W) images
on a grid ``upsample`` times finer (H = upsample * h), registered with half-pixel-centred sampling: input
pixel c covers target pixels upsample*c .. upsample*c + upsample - 1. Simulated stores add the focus
(``focus_z_um``), the true nuclei (``nuclei``: y, x in target pixels and defocus in um, NaN-padded) and the
input microscope's in-focus PSF on the target grid (``psf``, for the Richardson-Lucy baseline).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field

from infer.data import CropSampler, PairConfig, StackFileError, Target, _digest
from infer.manifest import Optics
from infer.superres.upsample import upsample_frames

PairKind = Literal["na", "confocal"]
MODALITY = {"na": "widefield", "confocal": "confocal"}  # the target modality of each simulated pair kind


class PairsRecipe(BaseModel):
    """How to render training pairs with the simulator when the pairs store does not exist yet."""

    model_config = ConfigDict(extra="forbid")
    kind: PairKind = "na"
    n: int = Field(24, ge=1, description="worms (simulator seeds seed*1000 + i)")
    seed: int = 1
    shape: tuple[int, int] = (256, 256)  # target grid (H, W); the input is H/upsample x W/upsample
    planes_per_worm: int = Field(3, ge=1)
    focus_range_um: float = Field(4.0, ge=0, description="focus drawn uniformly within +/- this of the midplane")
    bead_every: int = Field(0, ge=0, description="every k-th worm carries 0.2 um beads, not nuclei (0 = none)")


def write_pairs(path: str | Path, inputs: np.ndarray, targets: np.ndarray, *, pixel_size_um: float,
                offset_adu: float, focus_z_um: np.ndarray | None = None, nuclei: list[np.ndarray] | None = None,
                psf: np.ndarray | None = None, attrs: dict | None = None) -> Path:
    """Write a pairs store (Zarr v3 group); checks that inputs and targets are registrable first."""
    upsample = _upsample_factor(inputs.shape, targets.shape, str(path))
    root = zarr.open_group(str(path), mode="w")
    _, h, w = inputs.shape
    root.create_array("input", data=np.asarray(inputs, np.uint16), chunks=(1, h, w))
    root.create_array("target", data=np.asarray(targets, np.float32), chunks=(1, *targets.shape[1:]))
    if focus_z_um is not None:
        root.create_array("focus_z_um", data=np.asarray(focus_z_um, np.float32))
    if nuclei is not None:
        pad = np.full((len(nuclei), max(len(p) for p in nuclei), 3), np.nan, np.float32)
        for k, p in enumerate(nuclei):
            pad[k, : len(p)] = p
        root.create_array("nuclei", data=pad)
    if psf is not None:
        root.create_array("psf", data=np.asarray(psf, np.float32))
    root.attrs.update({"deepz_pairs": 1, "upsample": upsample, "pixel_size_um": float(pixel_size_um),
                       "input_pixel_size_um": float(pixel_size_um) * upsample, "offset_adu": float(offset_adu),
                       **(attrs or {})})
    return Path(path)


def _upsample_factor(input_shape: tuple, target_shape: tuple, source: str) -> int:
    """The whole-number factor between input (N, h, w) and target (N, H, W) grids, or a PairFileError."""
    if len(input_shape) != 3 or len(target_shape) != 3 or input_shape[0] != target_shape[0]:
        raise PairFileError(
            f"{source}: need 'input' (N, h, w) and 'target' (N, H, W) with the same N; got shapes "
            f"{tuple(input_shape)} and {tuple(target_shape)}."
        )
    (_, h, w), (_, hh, ww) = input_shape, target_shape
    u = hh // h if h else 0
    if u < 1 or hh != u * h or ww != u * w:
        raise PairFileError(
            f"{source}: the target grid {hh}x{ww} is not a whole multiple of the input grid {h}x{w} (same "
            "factor along both axes); register and crop the pairs so that H = u*h and W = u*w."
        )
    return u


class PairFileError(StackFileError):
    """A pairs store cannot be used for super-resolution training or evaluation."""


@dataclass
class RegisteredPairs:
    """N registered pairs: raw inputs (N, h, w) uint16 and targets (N, H, W) on a grid `upsample` x finer."""

    noisy: Any  # the raw low-resolution camera frames, (N, h, w) uint16 ("noisy" as in FocalStacks)
    target: Any  # (N, H, W) float32 ADU
    upsample: int
    pixel_size_um: float  # of the target grid
    offset_adu: float
    modality: Target
    attrs: dict = field(default_factory=dict)
    digest: str = ""
    focus_z_um: np.ndarray | None = None
    nuclei: np.ndarray | None = None  # (N, M, 3) y, x (target pixels), defocus um; NaN-padded
    psf: np.ndarray | None = None

    @property
    def n(self) -> int:
        """Number of pairs."""
        return int(self.noisy.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Target grid (H, W)."""
        return tuple(self.target.shape[-2:])

    def model_input(self, i: int) -> np.ndarray:
        """Pair i's input as the model sees it: bicubic-upsampled onto the target grid, uint16."""
        return upsample_frames(np.asarray(self.noisy[i]), self.upsample)

    def manifest_fields(self) -> dict[str, Any]:
        """The super-resolution parts of a model manifest trained on these pairs."""
        optics = Optics(**self.attrs.get("optics", {})).model_copy(update={"pixel_size_um": self.pixel_size_um})
        input_optics = Optics(**self.attrs.get("input_optics", {})).model_copy(
            update={"pixel_size_um": self.pixel_size_um * self.upsample})
        return dict(
            task="superres", optics=optics, input_optics=input_optics,
            axial_range_um=SUPERRES_AXIAL_UM, axial_step_um=SUPERRES_AXIAL_UM,
            details={"pair": self.attrs.get("kind", "disk"), "upsample": self.upsample,
                     "upsampling": "bicubic, half-pixel centres, rounded to uint16 before the network",
                     "dpm": "zeros: one plane at the focus (planes = [0])"},
        )


# A super-resolution model sees a DPM of zeros; its manifest's axial range and step are nominal (1 um) so that
# every engine accepts the single plane at dz = 0 and nothing else.
SUPERRES_AXIAL_UM = 1.0


def open_pairs(path: str | Path, *, pixel_size_um: float = 0.325, offset_adu: float | None = None,
               modality: Target | None = None) -> RegisteredPairs:
    """Open a pairs store: a Zarr group with 'input' and 'target', or a folder with input.tif + target.tif.

    Real pairs may omit the attributes: the pixel size (of the target grid) and modality come from the
    arguments, the camera offset defaults to the 0.1st percentile of the inputs.
    """
    path = Path(path)
    if not path.exists():
        raise PairFileError(f"No pairs at {path}; render some with `deepz simulate pairs --out {path}`.")
    tifs = [path / "input.tif", path / "target.tif"]
    if all(p.is_file() for p in tifs):
        import tifffile

        inputs, targets = (tifffile.imread(str(p)) for p in tifs)
        attrs: dict = {}
        node: Any = None
    else:
        try:
            node = zarr.open_group(str(path), mode="r")
        except Exception as exc:  # noqa: BLE001 - any zarr failure means "not a pairs store"
            raise PairFileError(f"{path} is neither a Zarr group nor a folder with input.tif and target.tif "
                                f"({type(exc).__name__}: {exc}).") from exc
        if "input" not in node or "target" not in node:
            raise PairFileError(f"{path} holds no 'input' and 'target' arrays; write them with "
                                "infer.superres.pairs.write_pairs or `deepz simulate pairs`.")
        inputs, targets, attrs = node["input"], node["target"], dict(node.attrs)
    inputs = inputs[None] if inputs.ndim == 2 else inputs
    targets = targets[None] if targets.ndim == 2 else targets
    u = _upsample_factor(inputs.shape, targets.shape, str(path))
    if np.dtype(inputs.dtype) != np.uint16:
        raise PairFileError(f"{path}: 'input' must be raw uint16 camera frames, got {inputs.dtype}.")
    offset = attrs.get("offset_adu", offset_adu)
    if offset is None:
        offset = float(np.percentile(np.asarray(inputs[: min(len(inputs), 8)])[:, ::4, ::4], 0.1))
    mod = attrs.get("modality", modality or "widefield")
    if modality is not None and mod != modality:
        raise PairFileError(f"{path} holds {mod} targets but {modality} was asked for; use pairs of that "
                            "modality or change the recipe's target.")

    def optional(name: str) -> np.ndarray | None:
        return np.asarray(node[name]) if node is not None and name in node else None

    return RegisteredPairs(
        noisy=inputs, target=targets, upsample=u, pixel_size_um=float(attrs.get("pixel_size_um", pixel_size_um)),
        offset_adu=float(offset), modality=mod, attrs=attrs,
        digest=_digest(attrs or str(path), list(inputs.shape), list(targets.shape)),
        focus_z_um=optional("focus_z_um"), nuclei=optional("nuclei"), psf=optional("psf"),
    )


class SuperResSampler(CropSampler):
    """Draws (upsampled input + zero DPM, target) crops from registered pairs, normalised, float32 numpy.

    A CropSampler like infer.data.PairSampler, so the Deep-Z Trainer trains super-resolution unchanged.
    """

    def __init__(self, pairs: RegisteredPairs, config: PairConfig, *, offset_adu: float, scale_adu: float,
                 target: Target = "widefield", indices: list[int] | None = None, seed: int = 0) -> None:
        if target != pairs.modality:
            raise PairFileError(f"these pairs hold {pairs.modality} targets, not {target}; set the recipe's "
                                f"target = {pairs.modality!r}.")
        super().__init__(config, seed)
        self.pairs = pairs
        self.offset, self.scale = offset_adu, scale_adu
        self.indices = list(range(pairs.n)) if indices is None else list(indices)
        h, w = pairs.shape
        if not self.indices or min(h, w) < config.crop:
            raise PairFileError(f"Cannot draw {config.crop}px crops from {len(self.indices)} pairs of {h}x{w}; "
                                "use larger or more pairs, or a smaller crop.")
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _pair(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Normalised (upsampled input, target) of pair n, cached."""
        if n not in self._cache:
            x = (self.pairs.model_input(n).astype(np.float32) - self.offset) / self.scale
            y = (np.asarray(self.pairs.target[n], np.float32) - self.offset) / self.scale
            self._cache[n] = (x, y)
        return self._cache[n]

    def _draw(self) -> tuple[np.ndarray, np.ndarray]:
        cfg, rng = self.config, self.rng
        image, target = self._pair(int(rng.choice(self.indices)))
        h, w = image.shape
        y0, x0 = rng.integers(0, h - cfg.crop + 1), rng.integers(0, w - cfg.crop + 1)
        win = (slice(y0, y0 + cfg.crop), slice(x0, x0 + cfg.crop))
        x = np.stack([image[win], np.zeros((cfg.crop, cfg.crop), np.float32)])
        return self._augmented(x, target[win][None])
