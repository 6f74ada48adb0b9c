"""Self-Net isotropic restoration (Ning et al., Light Sci. Appl. 12, 204, 2023), self-supervised per volume.

Lateral (xy) slices are the high-resolution reference. A degradation model fitted on the volume
(infer.isotropic.degradation) turns them into what axial slices look like after linear interpolation to
isotropic sampling; a small residual U-Net learns to undo it on (degraded xy -> xy) pairs and is then run on
the interpolated xz and yz slices, whose two restorations are averaged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from infer.isotropic.degradation import AxialDegradation, fit_degradation, sample_rows
from infer.isotropic.errors import IsotropicInputError
from infer.manifest import Architecture, ModelManifest, Normalisation, Optics, Training
from infer.model import DeepZGenerator, UNetConfig
from infer.model_io import LoadedModel, ModelFileError, load_model, save_model

Voxel = tuple[float, float, float]
PERCENTILES = (1.0, 99.9)
VOXEL_TOLERANCE = 0.02
CANDIDATES = 4


@dataclass(frozen=True)
class IsotropicConfig:
    """Training recipe: network size, steps, crops, learning rate (defaults: minutes on one CPU)."""

    steps: int = 600
    batch: int = 8
    crop: int = 64
    lr: float = 2e-3
    base_channels: int = 16
    depth: int = 3
    phases: int = 4  # degraded copies of every lateral plane, each with its own sampling phase and noise
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch < 1 or self.phases < 1:
            raise IsotropicInputError(f"steps, batch and phases must be >= 1, got {self}")
        if self.crop < 2**self.depth or self.crop % 2**self.depth:
            raise IsotropicInputError(
                f"crop {self.crop} must be a positive multiple of 2**depth = {2**self.depth}"
            )

    def unet(self) -> UNetConfig:
        """The restoration network: a 1-channel residual U-Net without normalisation layers."""
        return UNetConfig(
            base_channels=self.base_channels,
            depth=self.depth,
            max_channels=8 * self.base_channels,
            in_channels=1,
            out_channels=1,
            norm="none",
            residual=True,
        )


@dataclass
class IsotropicModel:
    """A trained restoration network with the degradation and voxel size it was trained for."""

    generator: DeepZGenerator
    degradation: AxialDegradation
    voxel_um: Voxel
    normalisation: Normalisation
    config: IsotropicConfig
    data_digest: str = ""
    losses: list[float] = field(default_factory=list)

    def manifest(self, name: str = "selfnet-isotropic") -> ModelManifest:
        """The manifest (task "isotropic") that travels with the weights."""
        dz, _, dx = self.voxel_um
        return ModelManifest(
            name=name,
            architecture=Architecture.from_config(self.generator.config),
            normalisation=self.normalisation,
            optics=Optics(pixel_size_um=dx),
            axial_range_um=dz,
            axial_step_um=dz,
            task="isotropic",
            details={
                "method": "Self-Net with a fitted Gaussian axial degradation (infer.isotropic)",
                "voxel_um": list(self.voxel_um),
                "degradation": self.degradation.to_dict(),
                "input_normalisation": f"per volume: percentiles {PERCENTILES} -> 0, 1",
            },
            training=Training(
                data_digest=self.data_digest,
                steps=self.config.steps,
                recipe=asdict(self.config),
                final_loss=self.losses[-1] if self.losses else None,
            ),
        )

    def save(self, path: str | Path, name: str = "selfnet-isotropic") -> Path:
        """Write safetensors weights + manifest.json (infer.model_io)."""
        return save_model(path, self.generator, self.manifest(name))

    @classmethod
    def load(cls, path: str | Path) -> IsotropicModel:
        """Load a model written by save(); refuses models of other tasks."""
        loaded: LoadedModel = load_model(path)
        manifest = loaded.manifest
        if manifest.task != "isotropic" or "degradation" not in manifest.details:
            raise ModelFileError(
                f"{path} holds a {manifest.task!r} model, not an isotropic-restoration one; pass a directory "
                "written by `deepz isotropic --save-model`."
            )
        recipe = {
            k: v for k, v in manifest.training.recipe.items() if k in IsotropicConfig.__dataclass_fields__
        }
        return cls(
            generator=loaded.generator,
            degradation=AxialDegradation(**manifest.details["degradation"]),
            voxel_um=tuple(manifest.details["voxel_um"]),
            normalisation=manifest.normalisation,
            config=IsotropicConfig(**recipe),
            data_digest=manifest.training.data_digest,
        )


def check_volume(volume: np.ndarray, voxel_um: Sequence[float]) -> tuple[np.ndarray, Voxel]:
    """A (Z, Y, X) float32 volume and its voxel size, or an IsotropicInputError saying what to fix."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise IsotropicInputError(
            f"isotropic restoration needs a 3D (Z, Y, X) volume, got shape {volume.shape}; pass a z-stack "
            "(for multi-channel data choose one channel)"
        )
    if min(volume.shape) < 2:
        raise IsotropicInputError(f"volume {volume.shape} has an axis shorter than 2 samples")
    voxel = tuple(float(v) for v in voxel_um)
    if len(voxel) != 3 or min(voxel) <= 0:
        raise IsotropicInputError(
            f"voxel size must be three positive numbers (dz, dy, dx) in um, got {voxel_um}; pass --voxel-um"
        )
    dz, dy, dx = voxel
    if abs(dy - dx) > VOXEL_TOLERANCE * dx:
        raise IsotropicInputError(f"lateral pixels must be square (dy == dx), got dy={dy}, dx={dx} um")
    if dz <= dx:
        raise IsotropicInputError(
            f"z step {dz} um is not coarser than the pixel {dx} um: the volume is already isotropic (or the "
            "voxel size is given in the wrong order; it is DZ,DY,DX)"
        )
    volume = volume.astype(np.float32)
    if not np.all(np.isfinite(volume)):
        raise IsotropicInputError(
            "volume holds NaN or inf values; fill or crop them before isotropic restoration"
        )
    return volume, voxel  # type: ignore[return-value]


def _normalise(volume: np.ndarray) -> tuple[np.ndarray, Normalisation]:
    lo, hi = (float(v) for v in np.percentile(volume, PERCENTILES))
    scale = hi - lo if hi > lo else 1.0
    return ((volume - lo) / scale).astype(np.float32), Normalisation(offset_adu=lo, scale_adu=scale)


def interpolate_z(volume: np.ndarray, dz_um: float, z_step_um: float) -> np.ndarray:
    """Linear interpolation along z onto planes every z_step_um from the first plane to (at most) the last."""
    n_out = int(np.floor((volume.shape[0] - 1) * dz_um / z_step_um + 1e-6)) + 1
    return sample_rows(volume, np.arange(n_out) * z_step_um / dz_um)


def _training_pairs(
    planes: np.ndarray, degradation: AxialDegradation, config: IsotropicConfig, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(inputs, targets): every lateral plane and its transpose, degraded along rows at random phases."""
    inputs, targets = [], []
    for view in (planes, np.ascontiguousarray(planes.transpose(0, 2, 1))):
        for _ in range(config.phases):
            for plane in view:
                inputs.append(degradation.apply(plane, rng, rng.uniform(0, degradation.z_step_um)))
                targets.append(plane)
    return inputs, targets


def _crop_batch(
    inputs: list[np.ndarray],
    targets: list[np.ndarray],
    margin: int,
    crop: int,
    batch: int,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch of aligned (crop x crop) patches away from the unsampled first and last rows; of
    CANDIDATES random patches the one with most structure (target variance) is kept: less empty background."""
    xs, ys = [], []
    for _ in range(batch):
        best = -1.0
        for _ in range(CANDIDATES):
            i = int(rng.integers(len(inputs)))
            r = int(rng.integers(margin, inputs[i].shape[0] - margin - crop + 1))
            c = int(rng.integers(0, inputs[i].shape[1] - crop + 1))
            target = targets[i][r : r + crop, c : c + crop]
            if (var := float(target.var())) > best:
                best, pa, pb = var, inputs[i][r : r + crop, c : c + crop], target
        if rng.random() < 0.5:  # flip along the degraded axis too: the axial PSF need not be symmetric
            pa, pb = pa[::-1], pb[::-1]
        if rng.random() < 0.5:
            pa, pb = pa[:, ::-1], pb[:, ::-1]
        xs.append(np.ascontiguousarray(pa))
        ys.append(np.ascontiguousarray(pb))
    return torch.from_numpy(np.stack(xs))[:, None], torch.from_numpy(np.stack(ys))[:, None]


def train_isotropic(
    volumes: Sequence[np.ndarray],
    voxel_um: Sequence[float],
    config: IsotropicConfig | None = None,
    *,
    progress: bool = True,
) -> IsotropicModel:
    """Fit the axial degradation of the volumes and train the restoration network on their lateral slices."""
    config = config or IsotropicConfig()
    checked = [check_volume(v, voxel_um) for v in volumes]
    if not checked:
        raise IsotropicInputError("no volume to train on")
    voxel = checked[0][1]
    normalised, norms = zip(*(_normalise(v) for v, _ in checked), strict=True)
    normalisation = norms[0]
    min_side = min(min(v.shape[1:]) for v in normalised)
    margin = int(np.ceil(voxel[0] / voxel[2]))
    unit = 2**config.depth
    crop = min(config.crop, (min_side - 2 * margin) // unit * unit)  # small fields of view: smaller crops
    if crop < 2 * unit:
        raise IsotropicInputError(
            f"lateral size {min_side} px is too small: training crops need at least {2 * unit} px plus a "
            f"{margin}-px sampling margin on each side; use a larger field of view"
        )
    degradation = fit_degradation(normalised[0], voxel, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    inputs, targets = [], []
    for v in normalised:
        a, b = _training_pairs(v, degradation, config, rng)
        inputs += a
        targets += b
    generator = DeepZGenerator(config.unet())
    opt = torch.optim.Adam(generator.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.steps)
    losses = []
    generator.train()
    with tqdm(
        range(config.steps), desc="train Self-Net", unit="step", disable=not progress, dynamic_ncols=True
    ) as bar:
        for step in bar:
            x, y = _crop_batch(inputs, targets, margin, crop, config.batch, rng)
            loss = F.l1_loss(generator(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
            if step % 20 == 0:
                bar.set_postfix(l1=f"{np.mean(losses[-20:]):.4f}", refresh=False)
    generator.eval()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(v).tobytes() for v, _ in checked)).hexdigest()
    return IsotropicModel(generator, degradation, voxel, normalisation, config, digest, losses)


def _restore_slices(generator: DeepZGenerator, slices: np.ndarray, batch: int, bar: tqdm) -> np.ndarray:
    """Network output for (N, H, W) slices, replicate-padded to multiples of 2**depth and cropped back."""
    m = 2**generator.config.depth
    n, h, w = slices.shape
    out = np.empty_like(slices)
    with torch.inference_mode():
        for i in range(0, n, batch):
            x = torch.from_numpy(slices[i : i + batch])[:, None]
            x = F.pad(x, (0, -w % m, 0, -h % m), mode="replicate")
            out[i : i + batch] = generator(x)[:, 0, :h, :w].numpy()
            bar.update(len(x))
    return out


def restore_volume(
    model: IsotropicModel,
    volume: np.ndarray,
    voxel_um: Sequence[float],
    *,
    z_step_um: float | None = None,
    progress: bool = True,
    batch: int = 4,
) -> tuple[np.ndarray, float]:
    """(restored (Z', Y, X) float32 in the input's units, its z step): xz and yz restorations averaged."""
    volume, voxel = check_volume(volume, voxel_um)
    trained = np.asarray(model.voxel_um)
    if np.any(np.abs(np.asarray(voxel) - trained) > VOXEL_TOLERANCE * trained):
        raise IsotropicInputError(
            f"the model was trained for voxel {tuple(model.voxel_um)} um (z, y, x) but the volume has "
            f"{voxel}; train a model on this data instead of passing --model"
        )
    dz, _, dx = voxel
    z_step = dx if z_step_um is None else float(z_step_um)
    if not 0 < z_step <= dz:
        raise IsotropicInputError(
            f"output z step {z_step} um must be > 0 and at most the input z step {dz} um"
        )
    if abs(z_step - dx) <= VOXEL_TOLERANCE * dx:
        return _restore_on_grid(model, volume, dz, dx, progress, batch), dx
    # the network restores at about the lateral pixel size: restore on the grid of step <= dx that ends on the
    # last input plane (so no plane is lost), then resample to the chosen step
    extent = (volume.shape[0] - 1) * dz
    fine_step = extent / np.ceil(extent / dx)
    fine = _restore_on_grid(model, volume, dz, fine_step, progress, batch)
    return interpolate_z(fine, fine_step, z_step), z_step


def _restore_on_grid(
    model: IsotropicModel, volume: np.ndarray, dz: float, step: float, progress: bool, batch: int
) -> np.ndarray:
    """The volume interpolated onto planes every `step` um and restored: xz and yz restorations averaged."""
    normalised, norm = _normalise(volume)
    stretched = interpolate_z(normalised, dz, step)  # (Z', Y, X)
    zyx = np.ascontiguousarray(stretched.transpose(1, 0, 2))  # xz slices: (Y, Z', X)
    zxy = np.ascontiguousarray(stretched.transpose(2, 0, 1))  # yz slices: (X, Z', Y)
    with tqdm(
        total=len(zyx) + len(zxy),
        desc="restore slices",
        unit="slice",
        disable=not progress,
        dynamic_ncols=True,
        leave=False,
    ) as bar:
        xz = _restore_slices(model.generator, zyx, batch, bar)
        yz = _restore_slices(model.generator, zxy, batch, bar)
    fused = 0.5 * (xz.transpose(1, 0, 2) + yz.transpose(1, 2, 0))
    return fused * norm.scale_adu + norm.offset_adu
