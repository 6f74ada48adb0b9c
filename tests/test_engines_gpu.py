"""GPU engines (torch-opt with CUDA graphs, TensorRT) against the reference; skipped without CUDA/TensorRT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engines_common import SHAPE, dpm, frames, tiny_model

from deepz.lab.engine_bench import relative_error, simulated_frames
from infer.engine import EngineOutOfMemory, make_engine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def reference(model):
    return make_engine("torch", model, SHAPE, dpm(), batch=2, device="cuda")


def _inputs() -> dict[str, np.ndarray]:
    return {"random": frames(2, seed=1), "simulated": simulated_frames(2, (64, 64), seed=2)[:, :32, :48]}


@pytest.mark.parametrize("precision", ["float16", "bfloat16"])
def test_torch_opt_half_matches_reference(model, reference, precision):
    engine = make_engine("torch-opt", model, SHAPE, dpm(), batch=2, device="cuda", precision=precision)
    assert engine.graphs, "CUDA graphs should be captured for the fixed batch"
    for kind, batch in _inputs().items():
        offset = model.manifest.normalisation.offset_adu
        error = relative_error(engine.run(batch), reference.run(batch), offset)
        assert error < 1e-2, (kind, error)


def test_pipelined_stream_equals_one_by_one(model):
    engine = make_engine("torch-opt", model, SHAPE, dpm(), batch=2, device="cuda")
    batches = [frames(2, seed=s) for s in range(5)] + [frames(1, seed=9)]
    one_by_one = [engine.run(b) for b in batches]
    streamed = list(engine.run_many(iter(batches)))
    assert [v.shape for v in streamed] == [v.shape for v in one_by_one]
    for a, b in zip(streamed, one_by_one, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cuda_out_of_memory_names_smaller_batch(model):
    free, _ = torch.cuda.mem_get_info()
    hog = torch.empty(free - (64 << 20), dtype=torch.uint8, device="cuda")  # leave 64 MiB
    try:
        with pytest.raises(EngineOutOfMemory, match="smaller batch"):
            make_engine("torch", model, (256, 256), dpm(32, (256, 256)), batch=8, device="cuda").run(
                frames(8, (256, 256))
            )
        with pytest.raises(EngineOutOfMemory, match="smaller batch"):
            make_engine("torch-opt", model, (256, 256), dpm(32, (256, 256)), batch=8, device="cuda")
    finally:
        del hog
        torch.cuda.empty_cache()


@pytest.mark.tensorrt
def test_tensorrt_matches_reference_and_caches(model, reference, tmp_path, monkeypatch):
    pytest.importorskip("tensorrt")
    monkeypatch.setenv("DEEPZ_CACHE_DIR", str(tmp_path))
    engine = make_engine("tensorrt", model, SHAPE, dpm(), batch=2, device="cuda")
    for kind, batch in _inputs().items():
        offset = model.manifest.normalisation.offset_adu
        error = relative_error(engine.run(batch), reference.run(batch), offset)
        assert error < 1e-2, (kind, error)
    assert engine.engine_path.is_file()
    mtime = engine.engine_path.stat().st_mtime_ns
    again = make_engine("tensorrt", model, SHAPE, dpm(), batch=2, device="cuda")
    assert again.engine_path == engine.engine_path and engine.engine_path.stat().st_mtime_ns == mtime
    other = make_engine("tensorrt", model, SHAPE, dpm(), batch=1, device="cuda")
    assert other.engine_path != engine.engine_path and other.engine_path.is_file()
