"""Engine.run_with_device: the volumes on the host and on the engine's device are the same, computed once."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engines_common import SHAPE, dpm, frames, tiny_model

from infer.engine import make_engine


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.mark.parametrize(
    "device",
    ["cpu", pytest.param("cuda", marks=[pytest.mark.gpu,
                                        pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")])],
)
def test_host_and_device_volumes_agree(model, device):
    engine = make_engine("torch-opt", model, SHAPE, dpm(), device=device)
    batch = frames()[:1]
    host, on_device = engine.run_with_device(batch)
    assert on_device.device.type == device and on_device.dtype == torch.uint16
    np.testing.assert_array_equal(on_device.cpu().numpy(), host)
    np.testing.assert_array_equal(host, engine.run(batch))  # the same as a plain run
