"""How many torch operations a piece of work issues, and how many of them wait for the device.

On a GPU the readout's small operations take less time to run than to launch, so its frame rate follows the
number of calls (and each wait for the device stalls the launching); counted on any device, the calls explain
a GPU's figures and show a change's effect on them without a GPU at hand."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from torch.profiler import ProfilerActivity, profile

__all__ = ["TorchCalls", "count_torch_calls"]

WAITS = frozenset({"aten::_local_scalar_dense", "aten::nonzero"})
"""Operations that read a result on the host (``.item()``, ``bool(tensor)``, boolean indexing) and so wait for
the device; a tensor's copy to the host waits too but is not told apart from copies on the device."""


@dataclass(frozen=True)
class TorchCalls:
    """Operations called from Python (not those they call in turn), and the ones among them that wait."""

    calls: int
    waits: int


def count_torch_calls(work: Callable[[], object]) -> TorchCalls:
    """Run ``work`` once under torch's profiler (CPU events only: the calls, not the kernels) and count."""
    logging.getLogger("torch.profiler").setLevel(logging.WARNING)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        work()
    calls = waits = 0
    for event in prof.events():
        nested = event.cpu_parent is not None and event.cpu_parent.name.startswith("aten::")
        if event.name.startswith("aten::") and not nested:
            calls += 1
        waits += event.name in WAITS
    return TorchCalls(calls, waits)
