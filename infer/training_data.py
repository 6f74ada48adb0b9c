"""What a training run draws from, on its device: stacks made resident, pairs, or worms rendered on the fly.

A recipe names its data (a stacks file, a super-resolution pairs store, or a [data.render] table; which one
a recipe gets is wired in deepz.training, as the simulated sources live in deepz.lab); a caller such as a
specimen calibration can hand over focal stacks instead. Either way the trainer gets the same TrainingData: batch sources on the device for training and validation, the normalisation, the data digest
and what the model manifest says about the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from infer.data import CropSampler, FocalStacks, intensity_scale
from infer.device_sampler import BatchSource, DevicePairSampler, DeviceStacks
from infer.manifest import Normalisation, Optics
from infer.superres.pairs import RegisteredPairs, SuperResSampler
from infer.train_config import TrainConfig

VAL_SEED = 12345  # validation draws the same pairs every time


class DataStream(Protocol):
    """Training data that changes as training goes (worms rendered on the fly): advanced every step, part of
    the checkpoint."""

    def advance(self) -> None: ...

    def state(self) -> dict: ...

    def set_state(self, state: dict) -> None: ...

    def close(self) -> None: ...


@dataclass
class TrainingData:
    """Batch sources on the device, and what the manifest records about the data."""

    train: BatchSource
    val: BatchSource | None
    norm: Normalisation
    digest: str
    manifest_fields: dict[str, Any]
    stream: DataStream | None = None

    def close(self) -> None:
        """Release worker processes (on-the-fly rendering)."""
        if self.stream is not None:
            self.stream.close()


class HostBatches:
    """A numpy CropSampler's batches moved to the device (super-resolution pairs)."""

    def __init__(self, sampler: CropSampler, device: torch.device) -> None:
        self.sampler, self.device = sampler, device

    def sample(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch drawn on the host, copied to the device."""
        x, y = self.sampler.sample(batch)
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)

    def state(self) -> dict:
        """The numpy sampler's RNG state."""
        return self.sampler.state()

    def set_state(self, state: dict) -> None:
        """Restore the numpy sampler's RNG state."""
        self.sampler.set_state(state)


def _split(n: int, val: int) -> tuple[slice, slice]:
    """Training and held-out (the last ones) ranges of n stacks; at least one stack trains."""
    n_val = min(val, n - 1)
    return slice(0, n - n_val), slice(n - n_val, n)


def stacks_data(config: TrainConfig, stacks: FocalStacks, device: torch.device) -> TrainingData:
    """Focal stacks copied to the device; the last data.val_stacks of them validate."""
    train_part, val_part = _split(stacks.n, config.data.val_stacks)
    norm = Normalisation(offset_adu=stacks.offset_adu, scale_adu=intensity_scale(stacks))
    target = stacks.target(config.target)

    def sampler(part: slice, pairs: Any, seed: int) -> DevicePairSampler:
        resident = DeviceStacks.from_arrays(np.asarray(stacks.noisy[part]), np.asarray(target[part]), stacks.z_um,
                                            stacks.pixel_size_um, device)
        return DevicePairSampler(resident, pairs, offset_adu=norm.offset_adu, scale_adu=norm.scale_adu, seed=seed)

    has_val = val_part.stop > val_part.start
    z = stacks.z_um
    step = float(np.median(np.diff(z))) if len(z) > 1 else config.pairs.axial_range_um
    optics = Optics(**{k: v for k, v in stacks.attrs.get("optics", {}).items() if k in Optics.model_fields})
    return TrainingData(
        train=sampler(train_part, config.pairs, config.train.seed),
        val=sampler(val_part, replace(config.pairs, augment=False), VAL_SEED) if has_val else None,
        norm=norm, digest=stacks.digest,
        manifest_fields=dict(optics=optics.model_copy(update={"pixel_size_um": stacks.pixel_size_um}),
                             axial_range_um=config.pairs.axial_range_um, axial_step_um=round(step, 4)),
    )


def pairs_data(config: TrainConfig, pairs: RegisteredPairs, device: torch.device) -> TrainingData:
    """Super-resolution pairs, drawn on the host (they are few and large) and moved to the device."""
    train_part, val_part = _split(pairs.n, config.data.val_stacks)
    norm = Normalisation(offset_adu=pairs.offset_adu, scale_adu=intensity_scale(pairs))
    common = dict(offset_adu=norm.offset_adu, scale_adu=norm.scale_adu, target=config.target)
    train = SuperResSampler(pairs, config.pairs, indices=list(range(train_part.start, train_part.stop)),
                            seed=config.train.seed, **common)
    val = SuperResSampler(pairs, replace(config.pairs, augment=False), seed=VAL_SEED,
                          indices=list(range(val_part.start, val_part.stop)), **common) \
        if val_part.stop > val_part.start else None
    return TrainingData(train=HostBatches(train, device), val=HostBatches(val, device) if val else None,
                        norm=norm, digest=pairs.digest, manifest_fields=pairs.manifest_fields())
