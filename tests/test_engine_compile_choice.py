"""Which engine compiles, and the key its compiled kernels are cached under (no CUDA needed)."""

from __future__ import annotations

import logging

import pytest

from infer.engines.compile_cache import CompileCache, compile_choice, compile_key

KEY = {"model_digest": "ab" * 32, "frame_shape": (512, 512), "planes": 32, "batch": 1, "precision": "float16",
       "device": "NVIDIA H200", "torch_version": "2.13.0+cu130"}


@pytest.mark.parametrize(
    ("device", "requested", "triton", "compiled", "why"),
    [
        ("cuda", None, True, True, "by default on CUDA"),
        ("cuda", None, False, False, "Triton"),
        ("cuda", True, False, False, "Triton"),
        ("cuda", False, True, False, "turned off"),
        ("cpu", None, False, False, "not compiled on the CPU"),
        ("cpu", True, False, True, "asked for"),
    ],
)
def test_compiled_by_default_on_cuda_only_and_it_says_why(device, requested, triton, compiled, why):
    choice, reason = compile_choice(device, requested, triton)
    assert choice is compiled and why in reason


def test_the_cache_key_changes_with_everything_the_kernels_depend_on():
    base = compile_key(**KEY)
    assert base == compile_key(**KEY) and len(base) == 32
    changed = {"model_digest": "cd" * 32, "frame_shape": (256, 512), "planes": 16, "batch": 2,
               "precision": "bfloat16", "device": "NVIDIA H100 80GB HBM3", "torch_version": "2.14.0+cu130"}
    for field, value in changed.items():
        assert compile_key(**{**KEY, field: value}) != base, field


def test_a_cache_file_of_another_model_or_edited_is_not_loaded(tmp_path):
    cache = CompileCache(tmp_path, compile_key(**KEY), KEY["model_digest"])
    assert "is missing" in cache.load() and not cache.loaded
    cache.path.write_bytes(b"not artifacts")
    assert "no readable seal" in cache.load() and not cache.loaded
    from infer.cache_seal import seal

    seal(cache.path, "ef" * 32)  # sealed for another model
    assert "another model" in cache.load() and not cache.loaded


def test_the_startup_line_names_the_engine_and_why(caplog):
    from infer.dpm import uniform_dpm, uniform_planes
    from infer.engine import make_engine
    from infer.model_io import load_model

    model, dpm = load_model(None), uniform_dpm(uniform_planes(-5.0, 5.0, 2), (32, 32))
    with caplog.at_level(logging.INFO, logger="infer.engine"):
        make_engine("torch-opt", model, (32, 32), dpm, device="cpu")
        make_engine("auto", model, (32, 32), dpm, device="cpu")
    lines = [r.getMessage() for r in caplog.records if r.name == "infer.engine"]
    assert len(lines) == 2
    assert lines[0].startswith("engine torch-opt on cpu: float32, channels-last; not compiled on the CPU")
    assert lines[1].startswith("engine auto -> ") and ("measured fastest" in lines[1] or "always runs" in lines[1])
