"""Stage builders for the compute process that fail on purpose (imported by its spawned process: keep light)."""

from __future__ import annotations

import time

import numpy as np

from deepz.compute_process import ComputeSpec, Stages, build_stages


class Faulty:
    """The real engine, failing (``raise``) or hanging (``stall``) from its ``after``-th frame on."""

    def __init__(self, engine, fault: str, after: int) -> None:
        self.engine, self.fault, self.after, self.calls = engine, fault, after, 0
        self.name, self.device = engine.name, engine.device

    def run(self, frames: np.ndarray) -> np.ndarray:
        self.calls += 1  # call 1 is the compute process's warm-up
        if self.calls > self.after:
            if self.fault == "raise":
                raise RuntimeError("injected engine fault")
            time.sleep(3600)
        return self.engine.run(frames)


def build_raising(spec: ComputeSpec) -> Stages:
    stages = build_stages(spec)
    return stages._replace(engine=Faulty(stages.engine, "raise", after=4))


def build_stalling(spec: ComputeSpec) -> Stages:
    stages = build_stages(spec)
    return stages._replace(engine=Faulty(stages.engine, "stall", after=4))


class SlowCalibration:
    """The real readout, each first calibration ``delay_s`` and each re-calibration ``recalibration_delay_s``
    slower (as on a loaded 2-core CPU)."""

    def __init__(self, readout, delay_s: float, recalibration_delay_s: float = 0.0) -> None:
        self.readout, self.delay_s, self.recalibration_delay_s = readout, delay_s, recalibration_delay_s

    def calibrate(self, *args, **kwargs):
        time.sleep(self.delay_s)
        return self.readout.calibrate(*args, **kwargs)

    def recalibrate(self, *args, **kwargs):
        time.sleep(self.recalibration_delay_s)
        return self.readout.recalibrate(*args, **kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "readout":  # deepcopy probes before the copy has its state
            raise AttributeError(name)
        return getattr(self.readout, name)


def build_slow_calibration(spec: ComputeSpec) -> Stages:
    """A first calibration 4 s slower, on a scan that reaches the readout 0.5 s after the frames taken after
    it (the control queue lagging the frame ring, as it can on a loaded machine)."""
    stages = build_stages(spec)
    stages.readout.readout = SlowCalibration(stages.readout.readout, delay_s=4.0)
    offer = stages.readout.offer_scan

    def late_offer(scan) -> None:
        time.sleep(0.5)
        offer(scan)

    stages.readout.offer_scan = late_offer
    return stages


def build_slow_recalibration(spec: ComputeSpec) -> Stages:
    stages = build_stages(spec)
    stages.readout.readout = SlowCalibration(stages.readout.readout, delay_s=0.0, recalibration_delay_s=3.0)
    return stages
