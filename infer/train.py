"""Deep-Z GAN training on focal stacks: L1 + SSIM + adversarial losses, validation, resumable checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import replace
import tomllib
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from infer.data import FocalStacks, PairConfig, PairSampler, Target, intensity_scale, open_stacks
from infer.manifest import Architecture, ModelManifest, Normalisation, Optics, Training
from infer.metrics import ssim_map
from infer.model import DeepZGenerator, Discriminator, Norm, UNetConfig
from infer.model_io import save_model
from infer.superres.pairs import PairsRecipe, RegisteredPairs, SuperResSampler, ensure_pairs

log = logging.getLogger(__name__)


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


class DataSection(BaseModel):
    """Where the focal stacks (or, for super-resolution, the pairs) are; the last val_stacks are held out."""

    model_config = ConfigDict(extra="forbid")
    stacks: str
    val_stacks: int = 2
    z_um: list[float] | None = None  # for raw stacks that do not record their z positions
    pixel_size_um: float = 0.325  # for raw stacks that do not record it
    simulate: SimulateSection | None = None
    simulate_pairs: PairsRecipe | None = None  # task "superres": render the pairs store when missing


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

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        """Read a TOML recipe."""
        with open(path, "rb") as f:
            return cls.model_validate(tomllib.load(f))


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into tensors (safetensors) and JSON."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": v.contiguous() for i, st in sd["state"].items() for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"], "keys": {str(i): list(st) for i, st in sd["state"].items()}}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state = {int(i): {k: tensors[f"{prefix}.{i}.{k}"] for k in keys} for i, keys in meta["keys"].items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


class Trainer:
    """Owns the networks, optimisers, pair samplers and history of one training run."""

    def __init__(self, config: TrainConfig, stacks: FocalStacks | RegisteredPairs) -> None:
        self.config, self.stacks = config, stacks
        tc = config.train
        torch.manual_seed(tc.seed)
        n_val = min(config.data.val_stacks, stacks.n - 1)
        train_idx = list(range(stacks.n - n_val))
        self.val_idx = list(range(stacks.n - n_val, stacks.n))
        self.norm = Normalisation(offset_adu=stacks.offset_adu, scale_adu=intensity_scale(stacks))
        self.unet = UNetConfig(**config.model.model_dump())
        self.g = DeepZGenerator(self.unet)
        self.d = Discriminator(in_channels=3)
        self.opt_g = torch.optim.Adam(self.g.parameters(), lr=tc.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.d.parameters(), lr=tc.lr, betas=(0.5, 0.999))
        common = dict(offset_adu=self.norm.offset_adu, scale_adu=self.norm.scale_adu, target=config.target)
        sampler = SuperResSampler if config.task == "superres" else PairSampler
        self.sampler = sampler(stacks, config.pairs, indices=train_idx, seed=tc.seed, **common)
        self.val_sampler = (
            sampler(stacks, replace(config.pairs, augment=False), indices=self.val_idx, seed=12345, **common)
            if self.val_idx else None
        )
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, Any]] = []
        self.out = Path(config.out_dir)

    # -- one optimisation step -------------------------------------------------------------------------
    def train_step(self) -> dict[str, float]:
        """One generator (and, after adv_start, discriminator) update on a fresh batch."""
        tc = self.config.train
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = tc.lr_at(self.step)
        x_np, y_np = self.sampler.sample(tc.batch)
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        self.g.train()
        fake = self.g(x)
        use_adv = tc.adv_weight > 0 and self.step >= tc.adv_start
        rec: dict[str, float] = {"step": self.step}
        if use_adv:
            real_logits = self.d(torch.cat([x, y], 1))
            fake_logits = self.d(torch.cat([x, fake.detach()], 1))
            loss_d = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._clip(self.d)
            self.opt_d.step()
            rec["loss_d"] = loss_d.item()
        l1 = (fake - y).abs().mean()
        ss = ssim_map(fake, y, 1.0).mean()
        loss = tc.l1_weight * l1 + tc.ssim_weight * (1 - ss)
        if use_adv:
            logits = self.d(torch.cat([x, fake], 1))
            adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            loss = loss + tc.adv_weight * adv
            rec["adv"] = adv.item()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        rec["grad_norm"] = self._clip(self.g)
        self.opt_g.step()
        rec |= {"loss_g": loss.item(), "l1": l1.item(), "ssim": ss.item()}
        self.step += 1
        return rec

    def _clip(self, net: torch.nn.Module) -> float:
        """Clip the network's gradient norm to train.grad_clip (when set); returns the norm before clipping."""
        limit = self.config.train.grad_clip
        return float(torch.nn.utils.clip_grad_norm_(net.parameters(), limit if limit > 0 else float("inf")))

    # -- validation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, n_batches: int = 4, batch: int = 8) -> dict[str, float]:
        """L1 / SSIM / PSNR on a fixed set of held-out pairs (same pairs every time)."""
        if self.val_sampler is None:
            return {}
        state = self.val_sampler.state()
        self.g.eval()
        l1s, ssims, psnrs = [], [], []
        for _ in range(n_batches):
            x, y = (torch.from_numpy(a) for a in self.val_sampler.sample(batch))
            fake = self.g(x)
            l1s.append(float((fake - y).abs().mean()))
            ssims.append(float(ssim_map(fake, y, 1.0).mean()))
            mse = ((fake - y) ** 2).mean(dim=(1, 2, 3))
            psnrs.append(float((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean()))
        self.val_sampler.set_state(state)
        rec = {"step": self.step, "l1": float(np.mean(l1s)), "ssim": float(np.mean(ssims)),
               "psnr": float(np.mean(psnrs))}
        self.val_history.append(rec)
        return rec

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write checkpoint/ (safetensors + state.json) atomically, the curve PNG and the model so far."""
        ckpt = self.out / "checkpoint"
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file({k: v.contiguous() for k, v in self.g.state_dict().items()}, str(tmp / "generator.safetensors"))
        save_file({k: v.contiguous() for k, v in self.d.state_dict().items()}, str(tmp / "discriminator.safetensors"))
        tg, mg = _optimizer_tensors(self.opt_g, "g")
        td, md = _optimizer_tensors(self.opt_d, "d")
        save_file(tg | td | {"torch_rng": torch.get_rng_state()}, str(tmp / "optimizer.safetensors"))
        state = {
            "step": self.step, "elapsed_s": self.elapsed_s, "config": self.config.model_dump(mode="json"),
            "data_digest": self.stacks.digest, "normalisation": self.norm.model_dump(),
            "opt_g": mg, "opt_d": md, "sampler_rng": self.sampler.state(),
            "history": self.history, "val_history": self.val_history,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
        self.plot_curves(self.out / "training_curve.png")
        self.export(self.out / "model")
        return ckpt

    def load_checkpoint(self) -> None:
        """Continue from checkpoint/ in the output directory."""
        ckpt = self.out / "checkpoint"
        if not (ckpt / "state.json").is_file():
            raise FileNotFoundError(f"No checkpoint in {ckpt} to resume from; start without --resume.")
        state = json.loads((ckpt / "state.json").read_text())
        if state["data_digest"] != self.stacks.digest:
            raise ValueError(
                f"The checkpoint in {ckpt} was trained on different stacks (digest {state['data_digest'][:12]}, "
                f"now {self.stacks.digest[:12]}); resume with the same data or start a new out_dir."
            )
        self.g.load_state_dict(load_file(str(ckpt / "generator.safetensors")))
        self.d.load_state_dict(load_file(str(ckpt / "discriminator.safetensors")))
        tensors = load_file(str(ckpt / "optimizer.safetensors"))
        _load_optimizer(self.opt_g, "g", tensors, state["opt_g"])
        _load_optimizer(self.opt_d, "d", tensors, state["opt_d"])
        torch.set_rng_state(tensors["torch_rng"])
        self.sampler.set_state(state["sampler_rng"])
        self.norm = Normalisation(**state["normalisation"])
        self.step, self.elapsed_s = state["step"], state["elapsed_s"]
        self.history, self.val_history = state["history"], state["val_history"]

    # -- outputs ---------------------------------------------------------------------------------------
    def manifest(self) -> ModelManifest:
        """The manifest of the generator as trained so far."""
        c = self.config
        return ModelManifest(
            name=c.name, architecture=Architecture.from_config(self.unet), normalisation=self.norm,
            modality=c.target, **self._task_fields(),
            training=Training(data_digest=self.stacks.digest, steps=self.step, recipe=c.model_dump(mode="json"),
                              wall_time_s=round(self.elapsed_s, 1),
                              final_validation=self.val_history[-1] if self.val_history else {}),
        )

    def _task_fields(self) -> dict[str, Any]:
        """Manifest fields that depend on the task: optics and axial range (refocus) or the pairs' (superres)."""
        if self.config.task == "superres":
            return self.stacks.manifest_fields()
        z = self.stacks.z_um
        step = float(np.median(np.diff(z))) if len(z) > 1 else self.config.pairs.axial_range_um
        optics = Optics(**{k: v for k, v in self.stacks.attrs.get("optics", {}).items() if k in Optics.model_fields})
        return dict(optics=optics.model_copy(update={"pixel_size_um": self.stacks.pixel_size_um}),
                    axial_range_um=self.config.pairs.axial_range_um, axial_step_um=round(step, 4))

    def export(self, path: Path) -> Path:
        """Save the generator (eval mode) + manifest as a model directory."""
        return save_model(path, self.g.eval(), self.manifest())

    def plot_curves(self, path: Path) -> None:
        """Training and validation losses against step, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
        if self.history:
            steps = np.array([h["step"] for h in self.history])
            for key, ax in (("l1", axes[0]), ("ssim", axes[1])):
                v = np.array([h[key] for h in self.history])
                k = max(1, len(v) // 50)
                ax.plot(steps, v, alpha=0.3, color="C0")
                ax.plot(steps[k - 1:], np.convolve(v, np.ones(k) / k, "valid"), color="C0", label="train")
            adv = [(h["step"], h["adv"], h["loss_d"]) for h in self.history if "adv" in h]
            if adv:
                a = np.array(adv)
                axes[2].plot(a[:, 0], a[:, 1], alpha=0.6, label="G adversarial")
                axes[2].plot(a[:, 0], a[:, 2], alpha=0.6, label="D loss")
        if self.val_history:
            vs = [v["step"] for v in self.val_history]
            axes[0].plot(vs, [v["l1"] for v in self.val_history], "o-", color="C3", label="validation")
            axes[1].plot(vs, [v["ssim"] for v in self.val_history], "o-", color="C3", label="validation")
        for ax, title in zip(axes, ("L1 (normalised)", "SSIM", "adversarial")):
            ax.set_title(title)
            ax.set_xlabel("step")
            if ax.lines:
                ax.legend(fontsize=8)
        fig.suptitle(f"{self.config.name}: target {self.config.target}")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
        plt.close(fig)

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self, progress: bool = True) -> Path:
        """Train to config.train.steps (or max_minutes); returns the exported model directory."""
        tc = self.config.train
        torch.set_num_threads(tc.threads)
        start = time.monotonic() - self.elapsed_s
        bar = tqdm(total=tc.steps, initial=self.step, disable=not progress, desc="train", unit="step")
        while self.step < tc.steps:
            rec = self.train_step()
            self.history.append(rec)
            self.elapsed_s = time.monotonic() - start
            bar.update(1)
            bar.set_postfix(l1=f"{rec['l1']:.4f}", ssim=f"{rec['ssim']:.3f}")
            out_of_time = tc.max_minutes > 0 and self.elapsed_s > tc.max_minutes * 60
            if self.step % tc.val_every == 0 or self.step == tc.steps or out_of_time:
                v = self.validate()
                if v:
                    log.info("step %d: validation L1 %.4f SSIM %.3f PSNR %.2f dB", self.step, v["l1"], v["ssim"],
                             v["psnr"])
            if self.step % tc.checkpoint_every == 0 or self.step == tc.steps or out_of_time:
                self.save_checkpoint()
            if out_of_time:
                log.info("stopping at step %d: max_minutes=%g reached", self.step, tc.max_minutes)
                break
        bar.close()
        model_dir = self.out / "model"
        if self.config.export_dir:
            shutil.copytree(model_dir, self.config.export_dir, dirs_exist_ok=True)
        return model_dir


def train(config: TrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train a Deep-Z (or super-resolution) model from a recipe; returns the model directory (out_dir/model)."""
    data = config.data
    if config.task == "superres":
        stacks = ensure_pairs(data.stacks, data.simulate_pairs, pixel_size_um=data.pixel_size_um,
                              target=config.target, progress=progress)
    else:
        stacks = open_stacks(data.stacks, z_um=np.asarray(data.z_um) if data.z_um else None,
                             pixel_size_um=data.pixel_size_um)
    trainer = Trainer(config, stacks)
    if resume:
        trainer.load_checkpoint()
    return trainer.fit(progress=progress)
