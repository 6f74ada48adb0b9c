"""`deepz bench activity`: frames/s of the live readout (track.readout.LiveReadout.update) on a simulated
worm, per device; calibration time reported apart (it runs once per scan, not per frame), the frames/s while
a re-calibration runs beside the readout (live: in a thread or in a process of its own), and how closely
the devices' readouts of the same frames agree."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from acquire.sim import WormSimulator
from deepz.calibration import live_calibrator
from deepz.calibration_process import CalibrationProcess
from deepz.config import CalibrationConfig
from deepz.lab.activity_eval import _optics
from deepz.lab.scaffold import machine, sim_config
from deepz.lab.torch_calls import count_torch_calls
from deepz.readout_stage import CalibrationJob
from track.readout import LiveReadout, ReadoutConfig
from track.readout.calibrate import StampFitConfig

__all__ = ["run_activity_bench", "trace_agreement"]


def _simulator(size: int, neurons: int, seed: int) -> WormSimulator:
    """A worm with ``neurons`` nuclei in a ``size``-pixel field (its body shortened to fit small fields)."""
    base = sim_config(size, seed=seed)
    field_um = size * base.optics.pixel_size_um
    length = min(base.worm.body_length_um, 0.8 * field_um)
    worm = base.worm.model_copy(update={"n_neurons": neurons, "body_length_um": length})
    return WormSimulator(base.model_copy(update={"worm": worm}))


def run_activity_bench(
    *, size: int = 512, neurons: int = 200, frames: int = 100, devices: list[str] | None = None, seed: int = 0
) -> dict[str, object]:
    """Calibrate once per device, then time ``update`` over ``frames`` pre-rendered frames; then read them
    on (back and forth) while the scan is re-calibrated on by each live calibrator; then count the torch
    calls of the frames again and of a calibration that fits every scan plane at once, as on a GPU (untimed:
    the profiler slows them)."""
    if size < 32 or neurons < 1 or frames < 2:
        raise ValueError("size must be >= 32, neurons >= 1 and frames >= 2.")
    devices = devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    sim = _simulator(size, neurons, seed)
    z = np.arange(-12.0, 12.25, 0.5)
    stack = np.stack([sim.render(k / 100, float(zk)) for k, zk in enumerate(z)])
    t_start = len(z) / 100
    stream = [sim.render(t_start + k / 100, 0.0) for k in range(frames)]
    results: dict[str, object] = {}
    readouts: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # device: (ids, brightness per timed frame)
    for device in devices:
        if device.startswith("cuda") and not torch.cuda.is_available():
            results[device] = {"skipped": "no CUDA device"}
            continue
        readout = LiveReadout(device=device)
        t0 = time.perf_counter()
        reference = readout.calibrate(stack, z, sim.pixel_size_um, _optics(sim))
        calibration_s = time.perf_counter() - t0
        readout.update(stream[0], t_start)  # the first frame settles the motion (several steps): not timed
        times, brightness = [], []
        for k, frame in enumerate(stream[1:], start=1):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            state = readout.update(frame, t_start + k / 100)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
            brightness.append(state.brightness[: len(reference)])  # neurons added since (entering) come last
        readouts[device] = (reference.ids, np.stack(brightness))
        rescan = CalibrationJob(stack, z, first=False, pixel_size_um=sim.pixel_size_um, optics=_optics(sim),
                                plane_period_s=0.01)  # fmt: skip
        # on from the last frame, back and forth through the stream: the motion stays continuous
        order = list(range(len(stream) - 2, -1, -1)) + list(range(1, len(stream)))
        frames_on = (stream[order[k % len(order)]] for k in itertools.count())
        t_next = t_start + len(stream) / 100
        beside: dict[str, Any] = {}
        for worker in ("thread", "process"):
            beside[worker] = _read_while_recalibrating(readout, worker, rescan, frames_on, t_next)
            t_next += beside[worker]["frames_read"] / 100
        t_end = t_next
        frame_calls = count_torch_calls(
            lambda: [readout.update(f, t_end + k / 100) for k, f in enumerate(stream[1:])]
        )  # fmt: skip
        every_plane = ReadoutConfig(fit=StampFitConfig(planes_per_step=len(z)))
        calibration_calls = count_torch_calls(
            lambda: LiveReadout(every_plane, device).calibrate(stack, z, sim.pixel_size_um, _optics(sim))
        )  # fmt: skip
        results[device] = {
            "frames_per_s_median": 1.0 / float(np.median(times)),
            "frames_per_s_mean": len(times) / float(np.sum(times)),
            "ms_per_frame_p90": 1000 * float(np.quantile(times, 0.9)),
            "calibration_s": calibration_s,
            "neurons_in_reference": len(reference),
            "keeps_up_with_100_hz": bool(np.median(times) <= 0.01),
            "torch_calls_per_frame": frame_calls.calls / len(times),
            "torch_waits_per_frame": frame_calls.waits / len(times),
            "torch_calls_per_calibration": calibration_calls.calls,
            "while_recalibrating": beside,
        }
    return {
        "benchmark": "activity",
        "frame_shape": [size, size],
        "neurons_simulated": neurons,
        "frames_timed": frames - 1,
        "scan_planes": len(z),
        "environment": machine(torch.device("cuda") if torch.cuda.is_available() else None),
        "results": results,
        "agreement": trace_agreement(readouts),
    }


def _read_while_recalibrating(
    readout: LiveReadout, worker: str, job: CalibrationJob, frames: Iterator[np.ndarray], t_s: float
) -> dict[str, Any]:
    """Frames/s of ``readout`` reading ``frames`` while a copy re-calibrates on ``job`` beside it, as live
    (``worker``: "thread" or "process"): from taking the copy (``hold``, in the readout's thread) until the
    calibrated copy is back. A process has calibrated once before (untimed), as it has live by a re-scan."""
    calibrator = live_calibrator(CalibrationConfig(worker=worker), readout, str(readout.device))
    if isinstance(calibrator, CalibrationProcess):
        calibrator.calibrate(calibrator.hold(readout), job)
    done = threading.Event()
    calibration_s, failure = 0.0, None

    def calibrate(held: Any) -> None:
        nonlocal calibration_s, failure
        t0 = time.perf_counter()
        try:
            calibrator.calibrate(held, job)
        except Exception as exc:  # noqa: BLE001 - raised in the bench's thread below
            failure = exc
        finally:
            calibration_s = time.perf_counter() - t0
            done.set()

    try:
        t0 = time.perf_counter()
        held = calibrator.hold(readout)
        hold_s = time.perf_counter() - t0
        thread = threading.Thread(target=calibrate, args=(held,), name="calibrate")
        thread.start()
        read = 0
        while not done.is_set():
            readout.update(next(frames), t_s + read / 100)
            read += 1
        seconds = time.perf_counter() - t0
        thread.join()
    finally:
        calibrator.close()
    if failure is not None:
        raise failure
    return {"frames_read": read, "seconds": seconds, "frames_per_s": read / seconds, "hold_s": hold_s,
            "recalibration_s": calibration_s}


def trace_agreement(readouts: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, object] | None:
    """How the first device's traces compare with each other device's (same frames, same neurons): the
    median per-neuron Pearson r and the largest brightness difference relative to the median brightness."""
    if len(readouts) < 2:
        return None
    (base, (ids, traces)), *others = readouts.items()
    out: dict[str, object] = {}
    for device, (other_ids, other) in others:
        if not np.array_equal(ids, other_ids):
            out[f"{base}_vs_{device}"] = {"same_reference": False, "neurons": [len(ids), len(other_ids)]}
            continue
        a, b = traces - traces.mean(0), other - other.mean(0)
        norm = np.sqrt((a * a).sum(0) * (b * b).sum(0))
        varying = norm > 0
        r = (a * b).sum(0)[varying] / norm[varying]
        scale = max(float(np.median(np.abs(traces))), 1e-12)
        out[f"{base}_vs_{device}"] = {
            "same_reference": True,
            "median_trace_r": float(np.median(r)) if r.size else None,
            "min_trace_r": float(r.min()) if r.size else None,
            "max_abs_difference_rel": float(np.abs(traces - other).max()) / scale,
        }
    return out
