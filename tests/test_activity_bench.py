"""The readout bench's device agreement (the GPU check's correctness test for the readout)."""

import numpy as np
import pytest

from deepz.lab.activity_bench import trace_agreement


def test_agreement_compares_each_device_with_the_first_on_the_same_neurons():
    ids = np.array([3, 5, 8])
    traces = np.random.default_rng(0).normal(100.0, 10.0, (50, 3))
    off = traces.copy()
    off[:, 2] += np.random.default_rng(1).normal(0.0, 10.0, 50)  # one neuron's trace differs
    result = trace_agreement({"cpu": (ids, traces), "cuda": (ids, traces.copy()), "cuda:1": (ids, off),
                              "cuda:2": (ids[:2], traces[:, :2])})
    assert result["cpu_vs_cuda"] == {"same_reference": True, "median_trace_r": pytest.approx(1.0),
                                     "min_trace_r": pytest.approx(1.0), "max_abs_difference_rel": 0.0}
    assert result["cpu_vs_cuda:1"]["median_trace_r"] == pytest.approx(1.0)
    assert result["cpu_vs_cuda:1"]["min_trace_r"] < 0.9
    assert result["cpu_vs_cuda:1"]["max_abs_difference_rel"] > 0.1
    assert result["cpu_vs_cuda:2"] == {"same_reference": False, "neurons": [3, 2]}
    assert trace_agreement({"cpu": (ids, traces)}) is None
