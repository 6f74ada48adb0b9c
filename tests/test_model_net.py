"""Deep-Z networks: shapes, FLOP model against the real convolutions, normalisation and batch layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infer.dpm import uniform_dpm
from infer.manifest import Normalisation
from infer.model import DeepZGenerator, Discriminator, UNetConfig, generator_flops_per_plane
from infer.normalise import from_normalised, network_input, to_normalised


@pytest.mark.parametrize("config", [UNetConfig(), UNetConfig(base_channels=4, depth=2, max_channels=8)])
def test_generator_maps_image_and_dpm_to_one_plane(config: UNetConfig) -> None:
    g = DeepZGenerator(config).eval()
    x = torch.randn(3, 2, 64, 48)
    with torch.no_grad():
        assert g(x).shape == (3, 1, 64, 48)
    assert Discriminator(in_channels=3)(torch.randn(2, 3, 64, 64)).shape == (2, 1, 4, 4)


def test_flops_match_the_convolutions_the_model_runs() -> None:
    config = UNetConfig(base_channels=8, depth=3, max_channels=16)
    g = DeepZGenerator(config).eval()
    counted = []

    def hook(mod: nn.Conv2d, _inp, out: torch.Tensor) -> None:
        k = mod.kernel_size[0] * mod.kernel_size[1]
        counted.append(2 * mod.in_channels * mod.out_channels * k * out.shape[-2] * out.shape[-1])

    for m in g.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_hook(hook)
    with torch.no_grad():
        g(torch.zeros(1, 2, 64, 32))
    assert generator_flops_per_plane(config, 64, 32) == sum(counted)
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth"):
        generator_flops_per_plane(config, 60, 32)


def test_normalisation_round_trips_uint16() -> None:
    norm = Normalisation(offset_adu=100, scale_adu=1000)
    raw = torch.tensor([0, 100, 1100, 65535], dtype=torch.uint16)
    x = to_normalised(raw, norm)
    assert torch.allclose(x, torch.tensor([-0.1, 0.0, 1.0, 65.435]))
    back = from_normalised(x, norm)
    assert back.dtype == torch.uint16 and back.tolist() == raw.tolist()
    assert from_normalised(torch.tensor([-5.0, 100.0]), norm).tolist() == [0, 65535]


def test_network_input_is_frame_major_and_scales_the_dpm() -> None:
    frames = torch.rand(2, 16, 16)
    dpm = torch.from_numpy(uniform_dpm([-10.0, 0.0, 5.0], (16, 16)))
    x = network_input(frames, dpm, axial_range_um=10.0)
    assert x.shape == (6, 2, 16, 16)
    for b in range(2):
        for k in range(3):
            assert torch.equal(x[b * 3 + k, 0], frames[b])
            assert torch.allclose(x[b * 3 + k, 1], dpm[k] / 10.0)
    assert np.isclose(float(x[5, 1, 0, 0]), 0.5)
