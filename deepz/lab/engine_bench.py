"""Roofline benchmark of the engines: throughput, latency, memory, FLOP/s against a peak measured in the run.

Also checks each backend against the torch reference on fresh random and simulated frames.
"""

from __future__ import annotations

import datetime as dt
import gc
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save

from deepz.lab.scaffold import machine, sim_config
from infer.dpm import uniform_dpm, uniform_planes
from infer.engine import make_engine, resolve_device
from infer.manifest import Architecture, ModelManifest, Normalisation
from infer.model import DeepZGenerator, UNetConfig, generator_flops_per_plane
from infer.model_io import LoadedModel, default_model_path, load_model

log = logging.getLogger(__name__)

HALF_TOLERANCE = 1e-2
FLOAT_TOLERANCE = 1e-3


def random_model(
    config: UNetConfig | None = None, *, seed: int = 0, axial_range_um: float = 10.0
) -> LoadedModel:
    """A LoadedModel with random weights and batch-norm statistics (benchmarks and tests without training)."""
    config = config or UNetConfig()
    generator = torch.Generator().manual_seed(seed)
    model = DeepZGenerator(config)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.1, 0.1, generator=generator)
    model.eval()
    digest = hashlib.sha256(save({k: v.contiguous() for k, v in model.state_dict().items()})).hexdigest()
    manifest = ModelManifest(
        name=f"random-seed{seed}",
        architecture=Architecture.from_config(config),
        normalisation=Normalisation(offset_adu=100.0, scale_adu=1000.0),
        axial_range_um=axial_range_um,
        axial_step_um=0.5,
        evaluation={"note": "random weights: for speed and agreement tests only"},
    )
    return LoadedModel(generator=model, manifest=manifest, digest=digest)


def bench_model(path: str | Path | None = None) -> tuple[LoadedModel, str]:
    """(LoadedModel, note): the given or shipped model, else a random model of the default architecture."""
    if path is not None:
        return load_model(path), f"model {path}"
    if (default_model_path() / "manifest.json").is_file():
        return load_model(), "the shipped default model"
    return random_model(), "no shipped model: a random-weight model of the default UNetConfig architecture"


def _cuda_time(fn: Callable[[], Any], reps: int) -> float:
    """Seconds per call of fn on the current CUDA stream, timed with events."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / reps


def measure_peak_tflops(device: torch.device) -> dict[str, Any]:
    """Measured dense matmul peak: fp16 8192^3 on CUDA, fp32 2048^3 on the CPU (best of several)."""
    if device.type == "cuda":
        n, dtype = 8192, torch.float16
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        seconds = min(_cuda_time(lambda: a @ b, 10) for _ in range(3))
    else:
        n, dtype = 2048, torch.float32
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t0)
        seconds = min(times)
    return {"dtype": str(dtype).removeprefix("torch."), "n": n, "tflops": 2 * n**3 / seconds / 1e12}


class _MemoryProbe:
    """Peak device memory during a block: CUDA memory in use, or the process RSS sampled on the CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._stop = threading.Event()

    def _used(self) -> int:
        if self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            return total - free
        import psutil

        return psutil.Process().memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self._used())

    def __enter__(self) -> _MemoryProbe:
        gc.collect()  # engines from earlier points (pipelines hold reference cycles) release their memory
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.empty_cache()
        self.baseline = self._used()
        self.peak = self.baseline
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._used())

    @property
    def used_mb(self) -> float:
        """Peak memory above the baseline, in MiB."""
        return (self.peak - self.baseline) / 2**20


def _percentile_ms(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1e3, q))


def random_frames(shape: tuple[int, ...], seed: int, *, offset: float = 100.0) -> np.ndarray:
    """Fresh random uint16 frames: a camera offset plus a broad range of signal."""
    rng = np.random.default_rng(seed)
    return (offset + rng.gamma(2.0, 300.0, size=shape)).clip(0, 65535).astype(np.uint16)


def simulated_frames(n: int, frame_shape: tuple[int, int], seed: int) -> np.ndarray:
    """n simulated wide-field worm frames (uint16, with noise) at random focus and time."""
    from acquire.sim import WormSimulator

    sim = WormSimulator(sim_config(frame_shape, seed=seed))
    rng = np.random.default_rng(seed)
    times, focus = rng.uniform(0, 5, n), rng.uniform(-3, 3, n)
    return np.stack([sim.render(float(t), float(z), noise=True) for t, z in zip(times, focus, strict=True)])


def engine_spec(spec: str, *, compile: bool = False) -> tuple[str, dict[str, Any]]:
    """'name' or 'name:precision' (e.g. 'torch-opt:bfloat16') -> (engine name, make_engine options)."""
    name, _, precision = spec.partition(":")
    options: dict[str, Any] = {"precision": precision} if precision else {}
    if compile and name == "torch-opt":
        options["compile"] = True
    return name, options


def bench_point(
    spec: str,
    model: LoadedModel,
    size: int,
    planes: int,
    batch: int,
    device: torch.device,
    *,
    seconds: float,
    warmup: int,
    peak_tflops: float,
    compile: bool = False,
) -> dict[str, Any]:
    """Build one engine and measure it: latency (frame in -> volume out), pipelined throughput, memory."""
    reach = 0.8 * model.manifest.axial_range_um
    dpm = uniform_dpm(uniform_planes(-reach, reach, planes), (size, size))
    frames = random_frames((batch, size, size), seed=1)
    with _MemoryProbe(device) as memory:
        t0 = time.perf_counter()
        name, options = engine_spec(spec, compile=compile)
        engine = make_engine(name, model, (size, size), dpm, batch, device, **options)
        build_s = time.perf_counter() - t0
        for _ in range(warmup):
            engine.run(frames)
        latencies: list[float] = []
        t_end = time.perf_counter() + seconds / 2
        while not latencies or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            engine.run(frames)
            latencies.append(time.perf_counter() - t0)
        if engine.pipeline is not None:  # throughput with uploads/downloads overlapping compute
            n = max(8, len(latencies))
            t0 = time.perf_counter()
            for _ in engine.run_many(frames for _ in range(n)):
                pass
            batches_per_s = n / (time.perf_counter() - t0)
        else:
            batches_per_s = len(latencies) / sum(latencies)
    volumes_per_s = batches_per_s * batch
    flops = generator_flops_per_plane(model.generator.config, size, size)
    achieved = volumes_per_s * planes * flops / 1e12
    return {
        **engine.describe(),
        "spec": engine.name + spec[len(name):],
        "size": size,
        "build_s": round(build_s, 3),
        "warmup": warmup,
        "iterations": len(latencies),
        "latency_ms": {
            "p50": _percentile_ms(latencies, 50),
            "p99": _percentile_ms(latencies, 99),
            "mean": float(np.mean(latencies) * 1e3),
        },
        "volumes_per_s": volumes_per_s,
        "planes_per_s": volumes_per_s * planes,
        "pipelined": engine.pipeline is not None,
        "gflop_per_plane": flops / 1e9,
        "achieved_tflops": achieved,
        "peak_tflops": peak_tflops,
        "peak_fraction": achieved / peak_tflops,
        "device_memory_mb": round(memory.used_mb, 1),
    }


def relative_error(volumes: np.ndarray, reference: np.ndarray, offset: float) -> float:
    """||volumes - reference|| / ||reference - offset||: error relative to the signal above the offset."""
    ref = reference.astype(np.float64)
    return float(np.linalg.norm(volumes.astype(np.float64) - ref) / max(np.linalg.norm(ref - offset), 1e-12))


def check_engines(
    specs: Sequence[str],
    model: LoadedModel,
    size: int,
    planes: int,
    device: torch.device,
    *,
    seed: int = 0,
    compile: bool = False,
) -> list[dict[str, Any]]:
    """Each engine vs the torch reference (same device) on fresh random and simulated frames."""
    dpm = uniform_dpm(uniform_planes(-model.manifest.axial_range_um, model.manifest.axial_range_um, planes),
                      (size, size))
    inputs = {"random": random_frames((1, size, size), seed, offset=model.manifest.normalisation.offset_adu)}
    try:
        inputs["simulated"] = simulated_frames(1, (size, size), seed)
    except ImportError as exc:
        log.warning("simulated inputs skipped: %s", exc)
    reference = make_engine("torch", model, (size, size), dpm, 1, device)
    expected = {kind: reference.run(frames) for kind, frames in inputs.items()}
    offset = model.manifest.normalisation.offset_adu
    results = []
    for spec in specs:
        name, options = engine_spec(spec, compile=compile)
        engine = make_engine(name, model, (size, size), dpm, 1, device, **options)
        tolerance = FLOAT_TOLERANCE if engine.precision == "float32" else HALF_TOLERANCE
        volumes = {kind: engine.run(frames) for kind, frames in inputs.items()}
        errors = {kind: relative_error(volumes[kind], expected[kind], offset) for kind in inputs}
        results.append({
            **engine.describe(),
            "spec": spec,
            "size": size,
            "relative_error": errors,
            "max_abs_error_adu": {
                kind: int(np.abs(volumes[kind].astype(np.int64) - expected[kind].astype(np.int64)).max())
                for kind in inputs
            },
            "tolerance": tolerance,
            "passed": all(e <= tolerance for e in errors.values()),
        })
    return results


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and hardware, for the JSON: the lab's machine record with the engines' runtimes."""
    return machine(device, packages=("onnxruntime", "tensorrt"))


def run_bench(
    engines: Sequence[str],
    sizes: Sequence[int],
    planes: Sequence[int],
    batch: int,
    device: str | None,
    *,
    model_path: str | Path | None = None,
    seconds: float = 10.0,
    warmup: int | None = None,
    check: bool = False,
    compile: bool = False,
) -> dict[str, Any]:
    """Benchmark every (engine spec, size, planes) point; optional agreement checks; one JSON-friendly dict.

    An engine spec is a name from ENGINE_NAMES or "auto", optionally with a precision: "torch-opt:bfloat16".
    """
    dev = resolve_device(device)
    model, note = bench_model(model_path)
    warmup = (5 if dev.type == "cuda" else 1) if warmup is None else warmup
    env = environment(dev)
    results, peaks = [], []
    for spec in engines:
        for size in sizes:
            for k in planes:
                peaks.append(measure_peak_tflops(dev))  # just before the point: same load on shared CPUs
                log.info("bench %s on %s: %dx%d, K=%d, B=%d (measured %s peak %.2f TFLOP/s)", spec, dev,
                         size, size, k, batch, peaks[-1]["dtype"], peaks[-1]["tflops"])
                point = bench_point(spec, model, size, k, batch, dev, seconds=seconds, warmup=warmup,
                                    peak_tflops=peaks[-1]["tflops"], compile=compile)
                log.info("  %.2f volumes/s, %.1f planes/s, latency p50 %.1f ms, p99 %.1f ms, %.1f%% of peak",
                         point["volumes_per_s"], point["planes_per_s"], point["latency_ms"]["p50"],
                         point["latency_ms"]["p99"], 100 * point["peak_fraction"])
                results.append(point)
    best = max(p["tflops"] for p in peaks)
    for point in results:  # against the best peak of the run: load from other processes only lowers it
        point["peak_fraction"] = point["achieved_tflops"] / best
    report: dict[str, Any] = {
        "benchmark": "infer",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "environment": {**env, "load_average_1m_end": round(os.getloadavg()[0], 2)},
        "model": {"name": model.manifest.name, "digest": model.digest, "note": note,
                  "architecture": model.manifest.architecture.model_dump()},
        "peak": {**peaks[0], "tflops": best,
                 "note": "best of the matmul measurements taken before each point (peak_tflops); "
                         "peak_fraction = achieved_tflops / this best"},
        "batch": batch,
        "seconds_per_point": seconds,
        "results": results,
    }
    if check:
        concrete = list(dict.fromkeys(p["spec"] for p in results))
        report["checks"] = check_engines(concrete, model, min(sizes), min(planes), dev, compile=compile)
    return report


def plot_sweep(report: dict[str, Any], path: str | Path) -> Path:
    """Planes/s and fraction of peak against frame size, one line per (engine, K)."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rate, ax_peak) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(p["spec"], p["planes"]) for p in report["results"]})
    for engine, k in keys:
        points = sorted((p for p in report["results"] if (p["spec"], p["planes"]) == (engine, k)),
                        key=lambda p: p["size"])
        sizes = [p["size"] for p in points]
        ax_rate.plot(sizes, [p["planes_per_s"] for p in points], "o-", label=f"{engine} K={k}")
        ax_peak.plot(sizes, [100 * p["peak_fraction"] for p in points], "o-", label=f"{engine} K={k}")
    env = report["environment"]
    title = f"{env.get('gpu', env['cpu'])} ({env['device']}), batch {report['batch']}"
    for ax, label in ((ax_rate, "planes / s"), (ax_peak, f"% of measured {report['peak']['dtype']} peak")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({p["size"] for p in report["results"]}))
        ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel("frame size (pixels per side)")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_rate.set_yscale("log")
    ax_rate.legend(fontsize=7)
    fig.suptitle(f"deepz bench infer: {title}")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
