"""`deepz train` as a library: a recipe's data wired to the trainer (stacks, pairs, or simulated worms).

The trainer (infer.train) and its batch sources (infer.training_data) know nothing of the simulator; the
simulated sources (worms rendered on the device, pairs rendered when missing) live in deepz.lab and are
chosen here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from infer.data import FocalStacks, open_stacks
from infer.device import DevicePlan
from infer.train import Trainer
from infer.train_config import TrainConfig
from infer.training_data import TrainingData, pairs_data, stacks_data


def training_data(config: TrainConfig, device: torch.device, stacks: FocalStacks | None = None, *,
                  progress: bool = True) -> TrainingData:
    """The data of a recipe on a device: the given focal stacks, else the recipe's stacks, pairs or renders."""
    if stacks is not None:
        return stacks_data(config, stacks, device)
    data = config.data
    if data.render is not None:
        from deepz.lab.worm_stream import rendered_data

        return rendered_data(config, device)
    if config.task == "superres":
        from deepz.lab.sim_pairs import ensure_pairs

        pairs = ensure_pairs(data.stacks, data.simulate_pairs, pixel_size_um=data.pixel_size_um,
                             target=config.target, progress=progress)
        return pairs_data(config, pairs, device)
    return stacks_data(config, open_stacks(data.stacks, z_um=np.asarray(data.z_um) if data.z_um else None,
                                           pixel_size_um=data.pixel_size_um), device)


def train_model(config: TrainConfig, *, device: str | torch.device | None = None, data: FocalStacks | None = None,
                resume: bool = False, progress: bool = True) -> Path:
    """Train a model from a recipe on a device; returns its directory (out_dir/model, copied to export_dir).

    device: "cpu", "cuda" or "auto" (default: the recipe's train.device). data: focal stacks to train on
    instead of the recipe's data (e.g. a specimen's calibration scan for a fine-tune); the recipe's pairs,
    model and schedule apply, and its last data.val_stacks stacks validate when there are enough.
    """
    device = device if device is not None else config.train.device
    plan = DevicePlan.for_device(device)
    prepared = training_data(config, plan.device, data, progress=progress)
    try:
        trainer = Trainer(config, prepared, plan.device)
        if resume:
            trainer.load_checkpoint()
        return trainer.fit(progress=progress)
    finally:
        prepared.close()


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train from a recipe on its own data and device (train_model with the recipe's defaults)."""
    return train_model(config, resume=resume, progress=progress)
