"""Deep-Z GAN training on any device: L1 + SSIM + adversarial losses, validation, resumable checkpoints.

The trainer runs one code path on the CPU and on CUDA (infer.device.DevicePlan switches on bf16 autocast,
channels-last and fused Adam on CUDA); its data is a TrainingData of batch sources on the same device
(infer.training_data). deepz.training.train_model() is the library entry that picks the data of a recipe.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from infer.device import DevicePlan
from infer.manifest import Architecture, ModelManifest, Training
from infer.metrics import ssim_map
from infer.model import DeepZGenerator, Discriminator, UNetConfig
from infer.model_io import save_model
from infer.train_config import (  # noqa: F401  (the recipe models are part of this module's interface)
    DataSection, ModelSection, TrainConfig, TrainSection,
)
from infer.training_data import TrainingData

log = logging.getLogger(__name__)


def _optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state into host tensors (safetensors) and JSON."""
    sd = opt.state_dict()
    tensors = {f"{prefix}.{i}.{k}": v.detach().cpu().contiguous() for i, st in sd["state"].items()
               for k, v in st.items()}
    return tensors, {"param_groups": sd["param_groups"], "keys": {str(i): list(st) for i, st in sd["state"].items()}}


def _load_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Restore an optimizer from host tensors; torch moves each state to its parameter's device."""
    state = {int(i): {k: tensors[f"{prefix}.{i}.{k}"] for k in keys} for i, keys in meta["keys"].items()}
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def _host_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's weights as contiguous host tensors (what safetensors stores)."""
    return {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}


class Trainer:
    """Owns the networks, optimisers, data and history of one training run on one device."""

    def __init__(self, config: TrainConfig, data: TrainingData,
                 device: str | torch.device | DevicePlan = "cpu") -> None:
        self.config, self.data = config, data
        self.plan = device if isinstance(device, DevicePlan) else DevicePlan.for_device(device)
        if self.plan.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed batch and crop: let cuDNN pick its fastest kernels
        tc = config.train
        torch.manual_seed(tc.seed)
        self.norm = data.norm
        self.unet = UNetConfig(**config.model.model_dump())
        self.g = self.plan.module(DeepZGenerator(self.unet))
        self.d = self.plan.module(Discriminator(in_channels=3))
        # what runs the forward passes: the networks, or their torch.compile'd graphs (train.compile)
        self.run_g, self.run_d = (torch.compile(n) if tc.compile else n for n in (self.g, self.d))
        self.opt_g = self.plan.adam(self.g.parameters(), tc.lr)
        self.opt_d = self.plan.adam(self.d.parameters(), tc.lr)
        self.step = 0
        self.elapsed_s = 0.0
        self.history: list[dict[str, float]] = []
        self.val_history: list[dict[str, Any]] = []
        self.out = Path(config.out_dir)

    # -- one optimisation step -------------------------------------------------------------------------
    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """A fresh training batch on the device (and, rendering on the fly, the worm ring moves on)."""
        x, y = self.data.train.sample(self.config.train.batch)
        if self.data.stream is not None:
            self.data.stream.advance()
        return x, y

    def train_step(self, batch: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, float]:
        """One generator (and, after adv_start, discriminator) update on a batch (default: a fresh one)."""
        tc, plan = self.config.train, self.plan
        for opt in (self.opt_g, self.opt_d):
            for group in opt.param_groups:
                group["lr"] = tc.lr_at(self.step)
        x, y = batch if batch is not None else self.next_batch()
        x, y = plan.batch(x), plan.batch(y)
        self.g.train()
        with plan.autocast():
            fake = self.run_g(x).float()
        use_adv = tc.adv_weight > 0 and self.step >= tc.adv_start
        scalars: dict[str, torch.Tensor] = {}
        if use_adv:
            with plan.autocast():
                real_logits = self.run_d(torch.cat([x, y], 1)).float()
                fake_logits = self.run_d(torch.cat([x, fake.detach()], 1)).float()
            loss_d = F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits)) + \
                F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self._clip(self.d)
            self.opt_d.step()
            scalars["loss_d"] = loss_d.detach()
        l1 = (fake - y).abs().mean()
        ss = ssim_map(fake, y, 1.0).mean()
        loss = tc.l1_weight * l1 + tc.ssim_weight * (1 - ss)
        if use_adv:
            with plan.autocast():
                logits = self.run_d(torch.cat([x, fake], 1)).float()
            adv = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
            loss = loss + tc.adv_weight * adv
            scalars["adv"] = adv.detach()
        self.opt_g.zero_grad(set_to_none=True)
        loss.backward()
        scalars["grad_norm"] = self._clip(self.g)
        self.opt_g.step()
        scalars |= {"loss_g": loss.detach(), "l1": l1.detach(), "ssim": ss.detach()}
        values = torch.stack([v.float() for v in scalars.values()]).tolist()  # one device sync per step
        self.step += 1
        return {"step": self.step - 1} | dict(zip(scalars, values))

    def _clip(self, net: torch.nn.Module) -> torch.Tensor:
        """Clip the network's gradient norm to train.grad_clip (when set); returns the norm before clipping."""
        limit = self.config.train.grad_clip
        return torch.nn.utils.clip_grad_norm_(net.parameters(), limit if limit > 0 else float("inf")).detach()

    # -- validation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self, n_batches: int = 4, batch: int = 8) -> dict[str, float]:
        """L1 / SSIM / PSNR on a fixed set of held-out pairs (same pairs every time)."""
        val = self.data.val
        if val is None:
            return {}
        state = val.state()
        self.g.eval()
        l1s, ssims, psnrs = [], [], []
        for _ in range(n_batches):
            x, y = val.sample(batch)
            with self.plan.autocast():
                fake = self.run_g(self.plan.batch(x)).float()
            l1s.append((fake - y).abs().mean())
            ssims.append(ssim_map(fake, y, 1.0).mean())
            mse = ((fake - y) ** 2).mean(dim=(1, 2, 3))
            psnrs.append((10 * torch.log10(1.0 / mse.clamp_min(1e-12))).mean())
        val.set_state(state)
        l1, ss, ps = (float(torch.stack(v).mean()) for v in (l1s, ssims, psnrs))
        rec = {"step": self.step, "l1": l1, "ssim": ss, "psnr": ps}
        self.val_history.append(rec)
        return rec

    # -- checkpoints -----------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write checkpoint/ (safetensors + state.json) atomically, the curve PNG and the model so far.

        Every tensor is stored from the host, so a checkpoint written on CUDA resumes on the CPU and back.
        """
        ckpt = self.out / "checkpoint"
        tmp = self.out / "checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_host_state(self.g), str(tmp / "generator.safetensors"))
        save_file(_host_state(self.d), str(tmp / "discriminator.safetensors"))
        tg, mg = _optimizer_tensors(self.opt_g, "g")
        td, md = _optimizer_tensors(self.opt_d, "d")
        save_file(tg | td | {"torch_rng": torch.get_rng_state()}, str(tmp / "optimizer.safetensors"))
        state = {
            "step": self.step, "elapsed_s": self.elapsed_s, "config": self.config.model_dump(mode="json"),
            "device": str(self.plan.device), "data_digest": self.data.digest,
            "normalisation": self.norm.model_dump(), "opt_g": mg, "opt_d": md,
            "sampler_rng": self.data.train.state(),
            "stream": self.data.stream.state() if self.data.stream is not None else None,
            "history": self.history, "val_history": self.val_history,
        }
        (tmp / "state.json").write_text(json.dumps(state))
        shutil.rmtree(ckpt, ignore_errors=True)
        tmp.rename(ckpt)
        self.plot_curves(self.out / "training_curve.png")
        self.export(self.out / "model")
        return ckpt

    def load_checkpoint(self) -> None:
        """Continue from checkpoint/ in the output directory, on this trainer's device (whatever wrote it)."""
        ckpt = self.out / "checkpoint"
        if not (ckpt / "state.json").is_file():
            raise FileNotFoundError(f"No checkpoint in {ckpt} to resume from; start without --resume.")
        state = json.loads((ckpt / "state.json").read_text())
        if state["data_digest"] != self.data.digest:
            raise ValueError(
                f"The checkpoint in {ckpt} was trained on different data (digest {state['data_digest'][:12]}, "
                f"now {self.data.digest[:12]}); resume with the same data or start a new out_dir."
            )
        # loaded on the host, then copied into the device's parameters and optimiser states (map_location)
        self.g.load_state_dict(load_file(str(ckpt / "generator.safetensors"), device="cpu"))
        self.d.load_state_dict(load_file(str(ckpt / "discriminator.safetensors"), device="cpu"))
        tensors = load_file(str(ckpt / "optimizer.safetensors"), device="cpu")
        _load_optimizer(self.opt_g, "g", tensors, state["opt_g"])
        _load_optimizer(self.opt_d, "d", tensors, state["opt_d"])
        torch.set_rng_state(tensors["torch_rng"])
        self.data.train.set_state(state["sampler_rng"])
        if self.data.stream is not None and state.get("stream"):
            self.data.stream.set_state(state["stream"])
        self.step, self.elapsed_s = state["step"], state["elapsed_s"]
        self.history, self.val_history = state["history"], state["val_history"]

    # -- outputs ---------------------------------------------------------------------------------------
    def manifest(self) -> ModelManifest:
        """The manifest of the generator as trained so far."""
        c = self.config
        fields = self.data.manifest_fields
        return ModelManifest(
            name=c.name, architecture=Architecture.from_config(self.unet), normalisation=self.norm,
            modality=c.target, **fields,
            training=Training(data_digest=self.data.digest, steps=self.step, recipe=c.model_dump(mode="json"),
                              wall_time_s=round(self.elapsed_s, 1), device=str(self.plan.device),
                              final_validation=self.val_history[-1] if self.val_history else {}),
        )

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
        if self.plan.device.type == "cpu":
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
