"""Training recipes (configs/train-*.toml): data, pairs, model, schedule, device, held-out evaluation."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from infer.data import PairConfig, Target
from infer.model import Norm
from infer.superres.pairs import PairsRecipe


class SimulateSection(BaseModel):
    """How to render the training stacks with the simulator when the stacks file does not exist yet."""

    model_config = ConfigDict(extra="forbid")
    n: int = 24
    seed: int = 1
    shape: tuple[int, int] = (256, 256)
    z_min_um: float = -13.0
    z_max_um: float = 13.0
    z_step_um: float = 0.5
    confocal: bool = False


class RenderSection(BaseModel):
    """On-the-fly data: fresh simulated worms rendered on the training device, a ring of `resident` at a time.

    Every refresh_every steps the oldest worm is replaced by a new one (deepz.lab.worm_stream), so no worm is
    drawn from after it retires. val_worms fixed worms (the stream's first) are the validation set.
    """

    model_config = ConfigDict(extra="forbid")
    seed: int = 1
    shape: tuple[int, int] = (256, 256)
    z_min_um: float = -13.0
    z_max_um: float = 13.0
    z_step_um: float = 0.5
    resident: int = Field(16, ge=1)
    refresh_every: int = Field(1, ge=1)
    val_worms: int = Field(2, ge=0)
    layout_workers: int = Field(0, ge=0)  # processes drawing worm layouts ahead (0 = in the training process)
    sim_config: str | None = None  # simulator TOML (default: acquire.sim's defaults)

    def z_um(self) -> list[float]:
        """The focal planes of every rendered stack."""
        n = int(round((self.z_max_um - self.z_min_um) / self.z_step_um))
        return [round(self.z_min_um + k * self.z_step_um, 6) for k in range(n + 1)]


class DataSection(BaseModel):
    """Where the focal stacks (or, for super-resolution, the pairs) are, the last val_stacks held out; or how
    to render worms on the fly instead (render)."""

    model_config = ConfigDict(extra="forbid")
    stacks: str | None = None
    val_stacks: int = 2
    z_um: list[float] | None = None  # for raw stacks that do not record their z positions
    pixel_size_um: float = 0.325  # for raw stacks that do not record it
    simulate: SimulateSection | None = None
    simulate_pairs: PairsRecipe | None = None  # task "superres": render the pairs store when missing
    render: RenderSection | None = None

    @model_validator(mode="after")
    def _one_source(self) -> DataSection:
        if (self.stacks is None) == (self.render is None):
            raise ValueError("[data] needs exactly one of stacks = PATH or a [data.render] table.")
        return self


class ModelSection(BaseModel):
    """Generator architecture (UNetConfig fields)."""

    model_config = ConfigDict(extra="forbid")
    base_channels: int = 16
    depth: int = 4
    max_channels: int = 128
    norm: Norm = "batch"


class TrainSection(BaseModel):
    """Optimisation schedule and loss weights."""

    model_config = ConfigDict(extra="forbid")
    steps: int = 2000
    batch: int = 8
    lr: float = 2e-4
    lr_drops: list[tuple[int, float]] = Field(default_factory=list)  # [step, lr]: from that step on, use lr

    def lr_at(self, step: int) -> float:
        """The learning rate of a step: lr, or the last drop reached."""
        return next((lr for at, lr in sorted(self.lr_drops, reverse=True) if step >= at), self.lr)
    l1_weight: float = 1.0
    ssim_weight: float = 0.5
    adv_weight: float = 0.01
    adv_start: int = 200  # steps of pixel/structural loss only before the discriminator joins
    grad_clip: float = 0.0  # clip each network's gradient norm to this (0 = off); guards against collapses
    val_every: int = 100
    checkpoint_every: int = 100
    max_minutes: float = 0.0  # stop (and save) after this wall time; 0 = no limit
    threads: int = 2
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "cpu"
    compile: bool = False  # torch.compile the networks (pays off on long CUDA runs)


class EvaluateSection(BaseModel):
    """Held-out evaluation of the exported model, stored in its manifest (`deepz evaluate --seed S --n N`)."""

    model_config = ConfigDict(extra="forbid")
    seed: int = 7
    n: int = Field(4, ge=1)
    shape: tuple[int, int] = (256, 256)  # frame of the held-out worms (256x256 is `deepz evaluate`'s)


class TrainConfig(BaseModel):
    """A training recipe (configs/train-*.toml)."""

    model_config = ConfigDict(extra="forbid")
    name: str = "deepz"
    task: Literal["refocus", "superres"] = "refocus"  # superres: registered pairs, a zero DPM, one plane
    out_dir: str = "runs/deepz"
    export_dir: str | None = None
    target: Target = "widefield"
    data: DataSection
    pairs: PairConfig = Field(default_factory=PairConfig)
    model: ModelSection = Field(default_factory=ModelSection)
    train: TrainSection = Field(default_factory=TrainSection)
    evaluate: EvaluateSection | None = None

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a TOML recipe."""
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))

    def with_overrides(self, assignments: list[str]) -> TrainConfig:
        """A copy with dotted KEY=VALUE assignments applied (VALUE in TOML syntax), e.g. train.steps=4."""
        data: dict[str, Any] = self.model_dump()
        for item in assignments:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"--set {item!r}: write KEY=VALUE, e.g. train.steps=4 or data.render.shape=[64, 64].")
            *parents, leaf = key.strip().split(".")
            node = data
            for name in parents:
                if not isinstance(node.get(name), dict):
                    node[name] = {}  # a table the recipe leaves out (e.g. evaluate) gets its defaults
                node = node[name]
            node[leaf] = tomllib.loads(f"v = {value.strip()}")["v"]
        return TrainConfig.model_validate(data)
