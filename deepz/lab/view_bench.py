"""Display refresh benchmark: full-window updates per second for 512x512 views, offscreen."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from deepz.lab.scaffold import machine
from display.state import ViewState


@dataclass(frozen=True)
class ViewBenchConfig:
    """Sizes of the benchmarked updates (defaults: the pipeline's 32 x 512 x 512 volumes, 180 neurons)."""

    updates: int = 300
    warmup: int = 20
    height: int = 512
    width: int = 512
    planes: int = 32
    neurons: int = 180
    trace_window: int = 300
    window_size: tuple[int, int] = (1600, 1000)
    distinct_states: int = 8
    seed: int = 0


class _PaintCounter(QtCore.QObject):
    """Counts paint events of the watched widgets (proof that each timed update really drew)."""

    count = 0

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:
        if event.type() == QtCore.QEvent.Type.Paint:
            self.count += 1
        return False


def synthetic_states(config: ViewBenchConfig) -> list[ViewState]:
    """Distinct, realistic-looking snapshots (noisy background, nuclei, moving tracks, random traces)."""
    rng = np.random.default_rng(config.seed)
    k, h, w, n = config.planes, config.height, config.width, config.neurons
    planes = np.linspace(-10.0, 10.0, k)
    px = 0.325
    margin = min(h, w) * px / 8
    centres = np.column_stack(
        [
            rng.uniform(-8, 8, n),
            rng.uniform(margin, h * px - margin, n),
            rng.uniform(margin, w * px - margin, n),
        ]
    )
    yy, xx = np.mgrid[0:h, 0:w]
    states = []
    for s in range(config.distinct_states):
        pos = centres + rng.normal(0, 0.5, centres.shape)
        volume = rng.normal(100, 5, (k, h, w)).astype(np.float32)
        for z, y, x in pos[:: max(n // 40, 1)]:  # paint a subset as blobs: enough structure to look real
            zi = int(np.argmin(np.abs(planes - z)))
            r0, c0 = int(y / px), int(x / px)
            sl = (slice(max(zi - 2, 0), zi + 3), slice(max(r0 - 8, 0), r0 + 9), slice(max(c0 - 8, 0), c0 + 9))
            blob = np.exp(-((yy[sl[1:]] - r0) ** 2 + (xx[sl[1:]] - c0) ** 2) / 18.0)
            volume[sl] += 800 * blob
        volume = volume.clip(0, 65535).astype(np.uint16)
        states.append(
            ViewState(
                t=s,
                frame=volume[k // 2] + rng.integers(0, 50, (h, w), dtype=np.uint16),
                volume=volume,
                track_ids=np.arange(n, dtype=np.int64),
                track_positions_um=pos.astype(np.float32),
                trace_ids=np.arange(n, dtype=np.int64),
                traces_dff=rng.gamma(1.0, 0.2, (n, config.trace_window)).astype(np.float32),
                trace_t=np.arange(config.trace_window, dtype=np.float64) / 100.0 + s,
                stats={
                    "input_hz": 100.0,
                    "volume_hz": 10.0,
                    "latency_ms_p50": 40.0,
                    "latency_ms_p99": 80.0,
                    "lost": 0,
                    "skipped": 3,
                    "queue_depth": 1,
                    "recording": None,
                },
                meta={"planes_um": planes.tolist(), "pixel_size_um": px},
            )
        )
    return states


def bench_view(config: ViewBenchConfig = ViewBenchConfig()) -> dict:
    """Time full-window updates: set every view's data, then let Qt paint all it invalidated."""
    from display.app import ensure_app
    from display.window import ViewerWindow

    app = ensure_app()
    states = synthetic_states(config)
    window = ViewerWindow("bench")
    window.resize(*config.window_size)
    window.show()
    paints = _PaintCounter()
    for view in (window.images, window.trace_view):
        view.viewport().installEventFilter(paints)
    set_ms, paint_ms = [], []
    cpu0 = 0.0
    for i in range(config.warmup + config.updates):
        if i == config.warmup:
            paints.count, cpu0 = 0, time.process_time()
        t0 = time.perf_counter()
        window.show_state(states[i % len(states)])
        t1 = time.perf_counter()
        app.processEvents()  # Qt paints the dirty regions here, as the event loop does after a live update
        t2 = time.perf_counter()
        if i >= config.warmup:
            set_ms.append((t1 - t0) * 1e3)
            paint_ms.append((t2 - t1) * 1e3)
    cpu_ms = (time.process_time() - cpu0) * 1e3 / config.updates
    window.close()
    total = np.asarray(set_ms) + np.asarray(paint_ms)
    return {
        "benchmark": "view refresh (full window: raw frame, XY/XZ/YZ, markers + IDs, traces, raster, status)",
        "config": asdict(config),
        "fps": float(1e3 / total.mean()),
        "update_ms": {
            "mean": float(total.mean()),
            "p50": float(np.percentile(total, 50)),
            "p99": float(np.percentile(total, 99)),
        },
        "cpu_ms_per_update": float(cpu_ms),
        "cpu_limited_fps": float(
            1e3 / cpu_ms
        ),  # the rate with one free core: wall fps drops when cores are shared
        "view_paints_per_update": paints.count / config.updates,
        "set_data_ms_mean": float(np.mean(set_ms)),
        "paint_ms_mean": float(np.mean(paint_ms)),
        "target_fps": 30.0,
        "qt_platform": QtWidgets.QApplication.platformName(),
        "qt_version": QtCore.qVersion(),
        "pyqtgraph_version": pg.__version__,
        "machine": machine(),
    }
