"""ONNX export checked against torch with onnxruntime; the onnxruntime engine against the reference."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from engines_common import SHAPE, dpm, frames, tiny_model

from deepz.lab.engine_bench import relative_error
from infer.engine import make_engine
from infer.cache_seal import seal, seal_problem
from infer.onnx_export import INPUT_NAME, OUTPUT_NAME, cached_onnx, onnx_cache_path

ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        path = tmp_path_factory.mktemp("engine-cache")
        mp.setenv("DEEPZ_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="module")
def model():
    return tiny_model(seed=3)


@pytest.fixture(scope="module")
def onnx_path(cache, model):
    return cached_onnx(model)


@pytest.mark.parametrize("shape", [(6, 2, 32, 48), (2, 2, 64, 16)])
def test_export_matches_torch_for_any_batch_and_frame_size(model, onnx_path, shape):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {INPUT_NAME: x.numpy()})
    with torch.no_grad():
        expected = model.generator(x).numpy()
    assert y.shape == expected.shape
    assert np.abs(y - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


def test_export_is_cached_by_digest(model, onnx_path, cache):
    mtime = onnx_path.stat().st_mtime_ns
    assert cached_onnx(model) == onnx_path and onnx_path.stat().st_mtime_ns == mtime
    assert model.digest[:16] in onnx_path.name and onnx_path.is_relative_to(cache)


def test_onnxruntime_engine_matches_reference(model, onnx_path):
    reference = make_engine("torch", model, SHAPE, dpm(6), batch=2, device="cpu")
    engine = make_engine("onnxruntime", model, SHAPE, dpm(6), batch=2, device="cpu")
    batch = frames(2, seed=4)
    error = relative_error(engine.run(batch), reference.run(batch), model.manifest.normalisation.offset_adu)
    assert error < 1e-4


def test_auto_prefers_onnxruntime_on_the_cpu(model, onnx_path, caplog):
    with caplog.at_level(logging.INFO, logger="infer.engine"):
        engine = make_engine("auto", model, SHAPE, dpm(), device="cpu")
    assert engine.name == "onnxruntime" and "engine auto -> onnxruntime on cpu" in caplog.text


def _foreign_graph(path) -> None:
    """A valid ONNX graph with the engine's input and output names that is not the model: y = mean over x's
    channels."""
    from onnx import TensorProto, helper, save

    x = helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["n", 2, "h", "w"])
    y = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["n", 1, "h", "w"])
    node = helper.make_node("ReduceMean", [INPUT_NAME], [OUTPUT_NAME], axes=[1], keepdims=1)
    save(helper.make_model(helper.make_graph([node], "foreign", [x], [y]),
                           opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_swapped_or_corrupt_export_is_never_run(cache):
    model = tiny_model(seed=9)
    path = onnx_cache_path(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    _foreign_graph(path)  # a graph under this model's cache name that was not exported from it
    engine = make_engine("onnxruntime", model, SHAPE, dpm(), device="cpu")  # exported again
    reference = make_engine("torch", model, SHAPE, dpm(), device="cpu")
    batch = frames(1, seed=2)
    assert relative_error(engine.run(batch), reference.run(batch), model.manifest.normalisation.offset_adu) < 1e-4
    assert seal_problem(path, model.digest) is None
    seal_file = path.with_suffix(".json")
    exported = path.read_bytes()
    _foreign_graph(path)  # swapped after it was sealed
    assert "changed since it was built" in seal_problem(path, model.digest)
    seal(path, tiny_model(seed=10).digest)  # graph and seal both from another model
    assert "another model" in seal_problem(path, model.digest)
    path.write_bytes(exported[: len(exported) // 2])  # truncated, seal left in place
    assert seal_problem(path, model.digest) is not None
    seal_file.unlink()
    path.write_bytes(exported)  # the right bytes but no seal
    assert "no readable seal" in seal_problem(path, model.digest)
