"""A measuring subscriber: receives pipeline messages and reports frame-to-subscriber latency as JSON.

Run as ``python -m deepz.probe ADDRESS SECONDS OUT.json [--stall]``; with ``--stall`` it connects and never
reads, to show that a stuck viewer does not slow the pipeline.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from wire.messages import Subscriber


def probe(address: str, seconds: float, *, stall: bool = False, idle_s: float = 3.0) -> dict:
    """Receive for up to `seconds`, or until `idle_s` pass without a message after the first one.

    Latency = arrival time - the newest frame's host time, in ms.
    """
    sub = Subscriber(address)
    latencies, volumes_seen, frames = [], set(), 0
    end = time.time() + seconds
    last = None
    try:
        while time.time() < end:
            if stall:
                time.sleep(0.1)
                continue
            msg = sub.latest(timeout_ms=100)
            if msg is None:
                if last is not None and time.time() - last > idle_s:
                    break
                continue
            last = time.time()
            frames += 1
            latencies.append((time.time() - msg.meta["frame_host_time_s"]) * 1e3)
            if "volume" in msg.arrays:
                volumes_seen.add(msg.meta.get("volume_t"))
    finally:
        sub.close()
    lat = np.asarray(latencies)
    return {
        "messages": frames,
        "discarded_as_stale": sub.discarded,
        "distinct_volumes": len(volumes_seen),
        "frame_to_subscriber_ms": {
            "p50": float(np.percentile(lat, 50)) if lat.size else None,
            "p99": float(np.percentile(lat, 99)) if lat.size else None,
        },
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    address, seconds, out = args[0], float(args[1]), Path(args[2])
    out.write_text(json.dumps(probe(address, seconds, stall="--stall" in args)))


if __name__ == "__main__":
    main()
