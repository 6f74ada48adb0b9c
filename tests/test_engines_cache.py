"""TensorRT engine cache keying (pure function, tested on the CPU) and TensorRT availability errors."""

from __future__ import annotations

import pytest
import torch
from engines_common import SHAPE, dpm, tiny_model

from infer.engine import EngineUnavailable, engine_unavailable_reason, make_engine
from infer.engines.tensorrt import engine_cache_key

BASE = {
    "model_digest": "a" * 64,
    "gpu_name": "NVIDIA H100 80GB HBM3",
    "trt_version": "10.13.0.35",
    "frame_shape": (512, 512),
    "planes": 32,
    "batch": 1,
}


def test_same_inputs_same_key():
    assert engine_cache_key(**BASE) == engine_cache_key(**dict(BASE, frame_shape=[512, 512]))


@pytest.mark.parametrize(
    "change",
    [
        {"model_digest": "b" * 64},
        {"gpu_name": "NVIDIA H200"},
        {"trt_version": "10.14.1.48"},
        {"frame_shape": (1024, 1024)},
        {"planes": 41},
        {"batch": 2},
        {"precision": "float32"},
    ],
)
def test_key_changes_when_anything_that_invalidates_the_engine_changes(change):
    assert engine_cache_key(**BASE) != engine_cache_key(**{**BASE, **change})


def test_tensorrt_reason_names_the_fix():
    reason = engine_unavailable_reason("tensorrt", torch.device("cpu"))
    assert reason is not None and "GPU" in reason
    with pytest.raises(EngineUnavailable, match="tensorrt"):
        make_engine("tensorrt", tiny_model(), SHAPE, dpm(), device="cpu")
