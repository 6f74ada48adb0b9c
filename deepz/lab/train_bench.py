"""`deepz bench train`: is the training step fed fast enough to keep the device busy?

For each device and model it times the full step (drawing the batch on the device, on-the-fly worms included,
then G, D and both optimisers) against the very same step on batches made once in advance (random tensors
already on the device). Their ratio is the figure: 1.0 means the data costs nothing; the target on CUDA is
>= 0.7. The time spent drawing batches alone (with the worm ring's refreshes, and without: the gather of
pairs from resident stacks) is reported beside it. Every call is timed to the end of its device work (the
step syncs once anyway, to log its losses).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from deepz.training import training_data
from infer.device import DevicePlan
from infer.train import Trainer
from infer.train_config import ModelSection, TrainConfig
from infer.training_data import TrainingData

LARGER_MODEL = ModelSection(base_channels=32, depth=5, max_channels=512, norm="none")


def _rates(modes: dict[str, Callable[[], Any]], plan: DevicePlan, steps: int, warmup: int) -> dict[str, float]:
    """Calls per second of each mode, after warmup calls of each, timed to the end of the device's work.

    The modes take turns call by call, so a machine whose load drifts (other processes on shared cores)
    slows them alike and their ratio stays fair.
    """
    for fn in modes.values():
        for _ in range(warmup):
            fn()
    spent = dict.fromkeys(modes, 0.0)
    for _ in range(steps):
        for name, fn in modes.items():
            plan.synchronize()
            start = time.perf_counter()
            fn()
            plan.synchronize()
            spent[name] += time.perf_counter() - start
    return {name: steps / t for name, t in spent.items()}


def _random_batch(config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of the recipe's shape made in advance on the device: image-like inputs, DPMs in range, targets."""
    b, c = config.train.batch, config.pairs.crop
    gen = torch.Generator(device=device).manual_seed(0)
    image = torch.rand(b, 1, c, c, generator=gen, device=device)
    dpm = (2 * torch.rand(b, 1, 1, 1, generator=gen, device=device) - 1).expand(b, 1, c, c)
    return torch.cat([image, dpm], 1), torch.rand(b, 1, c, c, generator=gen, device=device)


def bench_model(config: TrainConfig, data: TrainingData, plan: DevicePlan, *, steps: int,
                warmup: int) -> dict[str, Any]:
    """Full and pre-made-batch step rates of one model (the adversarial term on from the first step)."""
    config = config.model_copy(update={"train": config.train.model_copy(update={"adv_start": 0})})
    trainer = Trainer(config, data, plan.device)
    premade = _random_batch(config, plan.device)
    rates = _rates({"full": trainer.train_step, "random": lambda: trainer.train_step(premade)}, plan, steps,
                   warmup)
    full, random = rates["full"], rates["random"]
    # batch drawing on its own loop: the ring refreshes every refresh_every draws, whoever draws; and the
    # draw alone (pairs from the resident stacks, no refresh)
    drawing = _rates({"sampling": trainer.next_batch, "draw": lambda: data.train.sample(config.train.batch)},
                     plan, steps, warmup)
    pixels = config.train.batch * config.pairs.crop**2
    return {
        "model": config.model.model_dump(),
        "full_steps_per_s": round(full, 3), "random_steps_per_s": round(random, 3),
        "ratio_full_to_random": round(full / random, 3),
        "full_pixels_per_s": round(full * pixels), "random_pixels_per_s": round(random * pixels),
        "sampling_ms_per_batch": round(1000 / drawing["sampling"], 3),
        "draw_ms_per_batch": round(1000 / drawing["draw"], 3),
    }


def bench_train(recipe: TrainConfig, devices: list[str], *, steps: int, warmup: int,
                models: list[ModelSection] | None = None) -> dict[str, Any]:
    """Step rates on each device for the recipe's model and a larger one, with the recipe's data and batch."""
    models = models or [recipe.model, LARGER_MODEL]
    results: dict[str, Any] = {
        "recipe": recipe.model_dump(mode="json"), "steps": steps, "warmup": warmup,
        "batch": recipe.train.batch, "crop": recipe.pairs.crop, "devices": {},
    }
    for name in devices:
        plan = DevicePlan.for_device(name)
        if plan.device.type == "cpu":
            torch.set_num_threads(recipe.train.threads)
        start = time.perf_counter()
        data = training_data(recipe, plan.device, progress=False)
        entry: dict[str, Any] = {
            "device": _describe(plan.device), "data_setup_s": round(time.perf_counter() - start, 2),
            "plan": {"autocast": str(plan.autocast_dtype), "channels_last": plan.channels_last,
                     "fused_optimizer": plan.fused_optimizer, "compile": recipe.train.compile},
            "models": [],
        }
        try:
            for model in models:
                config = recipe.model_copy(update={"model": model})
                entry["models"].append(bench_model(config, data, plan, steps=steps, warmup=warmup))
        finally:
            data.close()
        results["devices"][str(plan.device)] = entry
    return results


def _describe(device: torch.device) -> str:
    """The device in words (GPU name, or CPU threads)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
