"""`deepz bench train`: is the training step fed fast enough to keep the device busy?

For each device and model it times the full step (drawing the batch on the device, on-the-fly worms included,
then G, D and both optimisers) against the very same step on batches made once in advance (random tensors
already on the device). Their ratio is the figure: 1.0 means the data costs nothing; the target on CUDA is
>= 0.7. The time spent drawing batches alone (with the worm ring's refreshes) is reported beside it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from infer.device import DevicePlan
from infer.train import Trainer
from infer.train_config import ModelSection, TrainConfig
from infer.training_data import TrainingData, training_data

LARGER_MODEL = ModelSection(base_channels=32, depth=5, max_channels=512, norm="none")


def _rate(fn: Callable[[], Any], plan: DevicePlan, steps: int, warmup: int) -> float:
    """Calls per second of fn after warmup calls, timed to the end of the device's queued work."""
    for _ in range(warmup):
        fn()
    plan.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    plan.synchronize()
    return steps / (time.perf_counter() - start)


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
    trainer = Trainer(config, data, plan.device, compile=config.train.compile)
    premade = _random_batch(config, plan.device)
    full = _rate(trainer.train_step, plan, steps, warmup)
    random = _rate(lambda: trainer.train_step(premade), plan, steps, warmup)
    sampling = _rate(trainer.next_batch, plan, steps, warmup)
    pixels = config.train.batch * config.pairs.crop**2
    return {
        "model": config.model.model_dump(),
        "full_steps_per_s": round(full, 3), "random_steps_per_s": round(random, 3),
        "ratio_full_to_random": round(full / random, 3),
        "full_pixels_per_s": round(full * pixels), "random_pixels_per_s": round(random * pixels),
        "sampling_ms_per_batch": round(1000 / sampling, 3),
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
