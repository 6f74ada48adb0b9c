"""`deepz bench pipeline`: a live run on the simulator with a measuring subscriber in another process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from deepz.config import load_config
from deepz.lab.scaffold import machine


def free_tcp_address() -> str:
    """A loopback tcp endpoint with a port free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


def bench_pipeline(*, seconds: float, rate_hz: float, size: int, planes: int, engine: str,
                   out: Path | None, compute: str = "auto", config: Path | None = None, track: bool | None = None,
                   calibrate: bool | None = None) -> dict[str, Any]:
    """Run `deepz live` for `seconds` with a subscriber process; return settings, summary and probe figures.

    ``compute``: where inference and tracking run (RunConfig.compute); ``config``: a base run config (the
    other arguments override it).
    """
    from deepz.runner import run_pipeline
    from deepz.wiring import software_versions

    address = free_tcp_address()
    before = machine()
    with tempfile.TemporaryDirectory(prefix="deepz-bench-") as tmp:
        recording = out or Path(tmp) / "bench.zarr"
        cfg = load_config(config, {
            "source": {"rate_hz": rate_hz, "size": size},
            "inference": {"planes": planes, "engine": engine},
            "recording": {"out": str(recording), "overwrite": True},
            **({"tracking": {"enabled": track}} if track is not None else {}),
            **({"calibration": {"enabled": calibrate}} if calibrate is not None else {}),
            "publish": {"address": address},
            "duration_s": seconds,
            "view": False,
            "compute": compute,
        })
        probe_json = Path(tmp) / "probe.json"
        probe = subprocess.Popen(
            [sys.executable, "-m", "deepz.probe", address, str(seconds + 120), str(probe_json)]
        )
        try:
            started = time.time()
            summary = run_pipeline(cfg)
            wall = time.time() - started
        finally:
            probe.wait(timeout=seconds + 60)
        subscriber = json.loads(probe_json.read_text())
    return {
        "benchmark": "pipeline",
        "machine": before,  # load_average_1m: other work on a shared machine, before the run
        "versions": software_versions(),
        "settings": {"seconds": seconds, "rate_hz": rate_hz, "size": size, "planes": planes, "engine": engine,
                     "compute": compute, "config": str(config) if config else None,
                     "tracking": cfg.tracking.enabled, "calibration": cfg.calibration.enabled},
        "wall_s": round(wall, 3),
        "summary": summary,
        "subscriber": subscriber,
    }
