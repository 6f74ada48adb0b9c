"""The training device and what it affords: bf16 autocast, channels-last and fused optimisers on CUDA only.

One object answers every "is this the GPU?" question of a training run, so the trainer, the samplers and the
bench run the same code on the CPU and on CUDA and differ only in what this plan switches on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch

DeviceName = Literal["auto", "cpu", "cuda"]


class DeviceError(Exception):
    """The requested device is not available on this machine."""


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto" -> CUDA when available, else the CPU; "cuda" (or "cuda:N") only when CUDA is available."""
    if isinstance(name, torch.device):
        name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {name}: this machine has no usable CUDA device; use --device cpu or auto.")
    if device.type not in ("cpu", "cuda"):
        raise DeviceError(f"--device {name}: this runs on 'cpu' or 'cuda' only.")
    return device


@dataclass(frozen=True)
class DevicePlan:
    """How networks and batches are laid out and computed on one device."""

    device: torch.device
    autocast_dtype: torch.dtype | None  # bf16 on CUDA; None = full float32
    channels_last: bool
    fused_optimizer: bool

    @classmethod
    def for_device(cls, device: str | torch.device) -> DevicePlan:
        """The plan of a device: CUDA gets bf16 autocast, channels-last and fused Adam; the CPU plain float32."""
        device = resolve_device(device)
        cuda = device.type == "cuda"
        return cls(device=device, autocast_dtype=torch.bfloat16 if cuda else None, channels_last=cuda,
                   fused_optimizer=cuda)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for forward passes (a no-op on the CPU)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def module(self, net: torch.nn.Module) -> torch.nn.Module:
        """Move a network to the device (channels-last where it pays)."""
        net = net.to(self.device)
        return net.to(memory_format=torch.channels_last) if self.channels_last else net

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch laid out like the networks' weights."""
        x = x.to(self.device, non_blocking=True)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def adam(self, params: Iterable[torch.nn.Parameter], lr: float) -> torch.optim.Adam:
        """Adam with the GAN betas; the fused kernel on CUDA."""
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), fused=self.fused_optimizer or None)

    def synchronize(self) -> None:
        """Wait for queued device work (timing only)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
