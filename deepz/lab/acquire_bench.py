"""Acquisition benchmark: sustained frame rate, lost frames, simulator render time and CPU use."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import psutil

from acquire.errors import AcquisitionError
from acquire.mm import MicroManagerSource
from acquire.sim.config import SimConfig
from deepz.lab import scaffold

SHARED_CPU_NOTE = (
    "Measured on a 2-core machine shared with other engineers' jobs: CPU contention lowers the figures; "
    "system_cpu_percent and load_average show how busy the machine was."
)


def render_timing(config: SimConfig, n: int = 100) -> dict[str, float]:
    """Wall and CPU ms per rendered (noisy, uint16) frame of the simulator alone, one thread."""
    from acquire.sim import WormSimulator

    sim = WormSimulator(config)
    sim.render(0.0, 0.0)
    walls, cpus = [], []
    for i in range(n):
        w, c = time.perf_counter(), time.thread_time()
        sim.render(i * 0.01, 0.0)
        walls.append(time.perf_counter() - w)
        cpus.append(time.thread_time() - c)
    wall, cpu = np.asarray(walls) * 1e3, np.asarray(cpus) * 1e3
    return {
        "frames": n,
        "wall_ms_mean": round(float(wall.mean()), 3),
        "wall_ms_p50": round(float(np.median(wall)), 3),
        "wall_ms_p99": round(float(np.percentile(wall, 99)), 3),
        "cpu_ms_mean": round(float(cpu.mean()), 3),
        "max_rate_hz_one_core": round(1000.0 / float(cpu.mean()), 1),
    }


def stream(config: SimConfig, rate_hz: float, seconds: float, *, prerendered: int = 0) -> dict[str, Any]:
    """Stream the simulated camera through UniMMCore + MicroManagerSource for ``seconds``; count arrivals.

    ``prerendered`` > 0 cycles that many pre-rendered frames: it measures the acquisition path alone.
    """
    from acquire.sim.devices import load_simulated_core

    core = load_simulated_core(config)
    core.setProperty(core.getCameraDevice(), "PrerenderedFrames", prerendered)
    proc = psutil.Process()
    try:
        source = MicroManagerSource(core, rate_hz=rate_hz)
        times: list[float] = []
        lags: list[float] = []
        psutil.cpu_percent(None)
        cpu0, wall0 = proc.cpu_times(), time.perf_counter()
        with source:
            for _frame, meta in source.frames():
                times.append(meta.camera_time_s)
                lags.append(meta.host_time_s - meta.camera_time_s)
                if time.perf_counter() - wall0 >= seconds:
                    break
            stats = source.stats
        wall = time.perf_counter() - wall0
        cpu1 = proc.cpu_times()
        system_cpu = psutil.cpu_percent(None)
    finally:
        core.unloadAllDevices()
    dt = np.diff(times) * 1e3 if len(times) > 1 else np.zeros(1)
    lag = (
        (np.asarray(lags) - min(lags)) * 1e3 if lags else np.zeros(1)
    )  # delivery latency beyond the best frame
    expected = int(round(seconds * rate_hz))
    process_cpu = (cpu1.user - cpu0.user + cpu1.system - cpu0.system) / wall * 100
    return {
        "size": list(config.camera.shape),
        "camera": f"cycling {prerendered} pre-rendered frames" if prerendered else "rendering every frame",
        "rate_target_hz": rate_hz,
        "seconds": round(wall, 3),
        "frames_expected": expected,
        "frames_acquired": stats.acquired,
        "frames_lost": stats.lost,
        "overflows": stats.overflows,
        "frames_short_of_target": max(0, expected - stats.acquired - stats.lost),
        "sustained_rate_hz": round(stats.rate_hz, 2),
        "camera_frame_interval_ms": {"mean": round(float(dt.mean()), 3), "max": round(float(dt.max()), 3)},
        "delivery_lag_ms": {
            "p50": round(float(np.median(lag)), 3),
            "p99": round(float(np.percentile(lag, 99)), 3),
            "max": round(float(lag.max()), 3),
        },
        "process_cpu_percent_of_one_core": round(process_cpu, 1),
        "system_cpu_percent": round(system_cpu, 1),
    }


def sustains(run: dict[str, Any]) -> bool:
    """A run sustains its target when nothing was lost and the camera kept 98 % of the target rate."""
    return run["frames_lost"] == 0 and run["sustained_rate_hz"] >= 0.98 * run["rate_target_hz"]


def find_max_rate(
    config: SimConfig, rates_hz: list[float], trial_s: float, *, prerendered: int = 0
) -> dict[str, Any]:
    """Try rates in increasing order (those the sensor readout allows) and keep the highest one sustained."""
    readout = config.camera.readout_interval_ms
    trials, best = [], 0.0
    for rate in sorted(rates_hz):
        if 1000.0 / rate < readout * (1 - 1e-9):
            trials.append(
                {
                    "rate_target_hz": rate,
                    "skipped": f"sensor readout {readout:g} ms allows {1000 / readout:g} Hz",
                }
            )
            continue
        run = stream(config, rate, trial_s, prerendered=prerendered)
        run["sustained"] = sustains(run)
        trials.append(run)
        if not run["sustained"]:
            break
        best = rate
    return {
        "size": list(config.camera.shape),
        "camera": f"cycling {prerendered} pre-rendered frames" if prerendered else "rendering every frame",
        "render": None if prerendered else render_timing(config, n=20),
        "max_sustained_rate_hz": best,
        "trials": trials,
    }


def machine() -> dict[str, Any]:
    """Where the benchmark ran, with the note on shared CPUs."""
    return scaffold.machine() | {"note": SHARED_CPU_NOTE}


def with_size(config: SimConfig, size: int) -> SimConfig:
    """The config with a square camera of ``size`` pixels."""
    if size < 16:
        raise AcquisitionError(f"Frame size {size} is too small; use at least 16 pixels (e.g. --size 512).")
    return scaffold.sim_config(size, base=config)
