"""Deep-Z networks: a U-Net generator (image + DPM -> refocused image) and a patch discriminator."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

Norm = Literal["batch", "instance", "none"]


@dataclass(frozen=True)
class UNetConfig:
    """Generator architecture: width, depth and layer choices (all export-friendly ops)."""

    base_channels: int = 16
    depth: int = 4
    max_channels: int = 128
    in_channels: int = 2
    out_channels: int = 1
    norm: Norm = "batch"
    residual: bool = True  # output = input image + learned correction

    def __post_init__(self) -> None:
        if self.base_channels < 1 or self.depth < 1 or self.max_channels < self.base_channels:
            raise ValueError(
                f"UNetConfig needs base_channels >= 1, depth >= 1 and max_channels >= base_channels; got "
                f"base_channels={self.base_channels}, depth={self.depth}, max_channels={self.max_channels}."
            )
        if self.norm not in ("batch", "instance", "none"):
            raise ValueError(f"UNetConfig.norm is {self.norm!r}; use 'batch', 'instance' or 'none'.")

    def channels(self) -> list[int]:
        """Feature channels at each resolution level 0..depth."""
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(self.depth + 1)]

    def to_dict(self) -> dict:
        """Plain dict (for manifests)."""
        return asdict(self)


def _norm(kind: Norm, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class _DoubleConv(nn.Sequential):
    """Two 3x3 conv + norm + LeakyReLU blocks."""

    def __init__(self, cin: int, cout: int, norm: Norm) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"),
            _norm(norm, cout),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none"),
            _norm(norm, cout),
            nn.LeakyReLU(0.1, inplace=True),
        )


def _conv_specs(config: UNetConfig) -> list[tuple[int, int, int, int]]:
    """(in_channels, out_channels, kernel, level) of every conv, in forward order (the FLOP model)."""
    ch = config.channels()
    specs = [(config.in_channels, ch[0], 3, 0), (ch[0], ch[0], 3, 0)]
    for level in range(1, config.depth + 1):
        specs += [(ch[level - 1], ch[level], 3, level), (ch[level], ch[level], 3, level)]
    for level in range(config.depth - 1, -1, -1):
        specs += [(ch[level + 1] + ch[level], ch[level], 3, level), (ch[level], ch[level], 3, level)]
    specs.append((ch[0], config.out_channels, 1, 0))
    return specs


class DeepZGenerator(nn.Module):
    """U-Net: (N, 2, H, W) [normalised image, DPM / axial_range_um] -> (N, 1, H, W) refocused image.

    H and W must be multiples of 2**depth. Only conv, norm, LeakyReLU, max-pool, bilinear upsampling,
    concatenation and addition: exports to ONNX / TensorRT with no data-dependent control flow.
    """

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or UNetConfig()
        cfg, ch = self.config, self.config.channels()
        self.inc = _DoubleConv(cfg.in_channels, ch[0], cfg.norm)
        self.down = nn.ModuleList(_DoubleConv(ch[i - 1], ch[i], cfg.norm) for i in range(1, cfg.depth + 1))
        self.up = nn.ModuleList(
            _DoubleConv(ch[i + 1] + ch[i], ch[i], cfg.norm) for i in range(cfg.depth - 1, -1, -1)
        )
        self.pool = nn.MaxPool2d(2)
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.head = nn.Conv2d(ch[0], cfg.out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Refocus each (image, DPM) pair of the batch."""
        skips = [self.inc(x)]
        for block in self.down:
            skips.append(block(self.pool(skips[-1])))
        h = skips.pop()
        for block in self.up:
            h = block(torch.cat([self.upsample(h), skips.pop()], dim=1))
        out = self.head(h)
        return out + x[:, :1] if self.config.residual else out


class Discriminator(nn.Module):
    """PatchGAN critic on (condition image, candidate image) pairs: (N, 2, H, W) -> (N, 1, H/16, W/16) logits."""

    def __init__(self, in_channels: int = 2, base_channels: int = 16, n_layers: int = 4) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i in range(n_layers):
            cout = base_channels * 2 ** min(i, 3)
            layers += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)]
            cin = cout
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch real/fake logits."""
        return self.net(x)


def generator_flops_per_plane(config: UNetConfig, h: int, w: int) -> float:
    """Forward FLOPs of the generator's convolutions for one (H, W) plane (multiply-add = 2 FLOPs)."""
    if h % 2**config.depth or w % 2**config.depth:
        raise ValueError(f"Plane shape ({h}, {w}) must be a multiple of 2**depth = {2**config.depth}.")
    return float(
        sum(2 * cin * cout * k * k * (h >> lvl) * (w >> lvl) for cin, cout, k, lvl in _conv_specs(config))
    )
