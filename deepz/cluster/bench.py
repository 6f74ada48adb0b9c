"""`deepz bench replay`: replay frames/s on local Dask clusters of several sizes, beside single-process replay."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _recording(path: Path, frames: int, size: int) -> Path:
    """A synthetic recording (Poisson blobs, storage.synthetic) with the shipped model's 0.325 um pixels."""
    from storage import RecordingWriter
    from storage.synthetic import blob_volume
    from wire.frames import FrameMeta

    with RecordingWriter(path, frame_shape=(size, size), pixel_size_um=0.325) as writer:
        for t in range(frames):
            record = FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False)
            writer.write_frame(blob_volume((size, size), seed=t), record)
    return path


def _difference(a: Path, b: Path) -> dict[str, int]:
    """Largest absolute difference and differing voxels between two recordings' volumes."""
    from storage import RecordingReader

    ra, rb = RecordingReader(a), RecordingReader(b)
    diffs = [np.abs(ra.volume(int(t)).astype(np.int32) - rb.volume(int(t)).astype(np.int32))
             for t in ra.volume_indices]  # fmt: skip
    return {"max_abs_adu": int(max(d.max() for d in diffs)), "voxels": int(sum(np.count_nonzero(d) for d in diffs)),
            "of_voxels": int(sum(d.size for d in diffs))}  # fmt: skip


def bench_replay(workers: list[int], *, frames: int, size: int, planes: int, engine: str, model: Path | None,
                 threads: int) -> dict[str, Any]:  # fmt: skip
    """Replay one synthetic recording single-process, then on a local cluster of each worker count; every
    process computes with ``threads`` torch threads, so the ratio measures what more worker processes give."""
    import torch

    from deepz.cluster.connect import ClusterSpec, connect
    from deepz.cluster.replay import replay_on_cluster
    from deepz.runner import run_pipeline
    from deepz.config import load_config
    from deepz.lab.scaffold import machine

    def config(out: Path):
        return load_config(None, {
            "inference": {"planes": planes, "engine": engine, "model": str(model) if model else None},
            "recording": {"out": str(out)}, "tracking": {"enabled": False}, "calibration": {"enabled": False},
            "view": False,
        })  # fmt: skip

    result: dict[str, Any] = {
        "what": "deepz replay of one synthetic recording: single process, then local Dask clusters",
        "settings": {"frames": frames, "size": size, "planes": planes, "engine": engine,
                     "model": str(model) if model else "shipped default"},  # fmt: skip
        "machine": machine(torch.device("cuda") if torch.cuda.is_available() else None,
                           packages=("dask", "distributed")),  # load_average_1m: before the runs
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="deepz-bench-replay-") as tmp:
        rec = _recording(Path(tmp) / "rec.zarr", frames, size)
        default_threads = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            single = run_pipeline(config(Path(tmp) / "single.zarr"), replay_from=rec)
        finally:
            torch.set_num_threads(default_threads)
        result["single_process"] = {"torch_threads": threads, "frames_per_s": single["volume_hz_mean"],
                                    "elapsed_s": single["elapsed_s"], "engine": single["engine"]}  # fmt: skip
        for n in workers:
            out = Path(tmp) / f"cluster-{n}.zarr"
            started = time.perf_counter()
            with connect(ClusterSpec(workers=n), dashboard_address=None) as client:
                started_s = time.perf_counter() - started
                summary = replay_on_cluster(config(out), rec, client, torch_threads=threads)
            result["runs"].append({
                "workers": n, "torch_threads_per_worker": summary["torch_threads"],
                "frames_per_s": summary["frames_per_s"], "compute_s": summary["compute_s"],
                "copy_s": summary["copy_s"], "cluster_start_s": round(started_s, 3),
                "regions": summary["regions"], "frames_per_region": summary["frames_per_region"],
                "engines": summary["engines"],
                "difference_from_single_process": _difference(out, Path(tmp) / "single.zarr"),
            })  # fmt: skip
    result["machine"]["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    rates = {r["workers"]: r["frames_per_s"] for r in result["runs"]}
    first, last = result["runs"][0], result["runs"][-1]
    result["summary"] = {
        "frames_per_s_by_workers": rates,
        "single_process_frames_per_s": result["single_process"]["frames_per_s"],
        f"ratio_{last['workers']}_over_{first['workers']}_workers":
            round(last["frames_per_s"] / first["frames_per_s"], 3),
    }  # fmt: skip
    return result
