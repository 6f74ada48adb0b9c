"""`deepz replay --cluster`: a local Dask cluster of two worker processes replays a short recording exactly as a
single process does; a stopped client and a killed worker leave a store that completes; bad addresses fail
with one line."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from engines_common import tiny_model
from typer.testing import CliRunner

from deepz.cli import app
from deepz.cluster.connect import ClusterSpec, connect
from deepz.cluster.replay import replay_on_cluster
from deepz.config import ConfigError, load_config
from deepz.offline_tracking import track_recording
from deepz.runner import run_pipeline
from infer.model_io import save_model
from storage import RecordingExistsError, RecordingReader, RecordingWriter
from wire.frames import FrameMeta
from storage.region_writer import PENDING_REASON, VolumeRegions
from storage.synthetic import blob_volume

FRAMES, SIZE, PLANES, REGION_FRAMES = 40, 64, 4, 4


def _config(out: Path, model: Path):
    return load_config(None, {
        "inference": {"planes": PLANES, "engine": "torch", "z_range_um": [-6.0, 6.0], "model": str(model)},
        "recording": {"out": str(out)}, "tracking": {"enabled": False}, "view": False,
    })  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """(recording, model): 40 frames of 64x64 Poisson blobs, and a tiny random-weight model."""
    tmp = tmp_path_factory.mktemp("cluster")
    model = tiny_model()
    model_dir = save_model(tmp / "tiny", model.generator, model.manifest)
    rec = tmp / "rec.zarr"
    with RecordingWriter(rec, frame_shape=(SIZE, SIZE), pixel_size_um=0.325) as writer:
        for t in range(FRAMES):
            record = FrameMeta(t, t + 7, t * 0.01, 100.0 + t * 0.01, 0.5, 10.0, int(t == 5), False)
            writer.write_frame(blob_volume((SIZE, SIZE), n_blobs=12, seed=t), record)
    return rec, model_dir


@pytest.fixture(scope="module")
def single(files, tmp_path_factory) -> Path:
    """Single-process replay with one torch thread, as each worker computes."""
    rec, model = files
    out = tmp_path_factory.mktemp("single") / "single.zarr"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_pipeline(_config(out, model), replay_from=rec)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def client():
    with connect(ClusterSpec(workers=2), dashboard_address=None) as client:
        yield client


def assert_same_store(out: Path, single: Path, every: int = 1) -> None:
    """Raw frames, their metadata and every ``every``-th volume equal bit for bit; the store is complete."""
    a, b = RecordingReader(out), RecordingReader(single)
    assert a.complete and a.stopped_reason is None
    assert a.n_frames == b.n_frames == FRAMES
    np.testing.assert_array_equal(a.volume_indices, np.arange(0, FRAMES, every))
    np.testing.assert_array_equal(a.frames[:], b.frames[:])
    for name, column in b.metadata.items():
        np.testing.assert_array_equal(a.metadata[name], column, err_msg=name)
    for t in range(0, FRAMES, every):
        np.testing.assert_array_equal(a.volume(t), b.volume(t), err_msg=f"volume {t}")
    volumes_image = zarr.open_group(out / "1", mode="r").attrs["ome"]["multiscales"][0]  # NGFF t axis fitted
    assert volumes_image["datasets"][0]["coordinateTransformations"][0]["scale"][0] == pytest.approx(
        every * a.frame_interval_s)


def test_two_workers_match_single_process_replay_exactly(files, single, client, tmp_path) -> None:
    rec, model = files
    out = tmp_path / "cluster.zarr"
    workers: set[str] = set()
    summary = replay_on_cluster(_config(out, model), rec, client, torch_threads=1, region_frames=REGION_FRAMES,
                                on_region=lambda done: workers.add(done.worker))  # fmt: skip
    assert summary["regions"] == summary["regions_computed"] == FRAMES // REGION_FRAMES
    assert summary["frames_computed"] == summary["volumes"] == FRAMES and not summary["resumed"]
    assert len(workers) == 2  # both processes computed regions
    assert_same_store(out, single)
    regions = VolumeRegions(out)
    assert regions.done.all() and regions.frames_per_region == REGION_FRAMES
    assert RecordingReader(out).attrs["replayed_from"] == str(rec.resolve())


def test_stopped_client_is_resumed_computing_only_missing_regions(files, single, client, tmp_path) -> None:
    rec, model = files
    out = tmp_path / "resumed.zarr"
    seen = []

    def stop_after_two(done) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the client

    with pytest.raises(KeyboardInterrupt):
        replay_on_cluster(_config(out, model), rec, client, torch_threads=1, region_frames=REGION_FRAMES,
                          on_region=stop_after_two)  # fmt: skip
    stopped = RecordingReader(out)
    assert not stopped.complete and stopped.stopped_reason == PENDING_REASON
    assert stopped.n_frames == FRAMES and stopped.volume_indices.size == 0  # raw stored; volumes not yet indexed
    assert VolumeRegions(out).done.sum() >= 2

    other = _config(out, model).model_copy(update={"inference": _config(out, model).inference.model_copy(
        update={"planes": PLANES + 1})})  # fmt: skip
    with pytest.raises(RecordingExistsError, match="other settings"):  # never resumed into a mixed store
        replay_on_cluster(other, rec, client, torch_threads=1)

    # a task the stopped client left running may still finish meanwhile: done_before is counted at the plan
    summary = replay_on_cluster(_config(out, model), rec, client, torch_threads=1)
    assert summary["resumed"] and 2 <= summary["regions_done_before"] < FRAMES // REGION_FRAMES
    assert summary["regions_computed"] == FRAMES // REGION_FRAMES - summary["regions_done_before"]
    assert_same_store(out, single)


def test_replay_command_on_a_scheduler_address(files, single, client, tmp_path) -> None:
    rec, model = files
    out = tmp_path / "cli.zarr"
    args = ["replay", str(rec), "--out", str(out), "--model", str(model), "--planes", str(PLANES),
            "--z-range", "-6", "6", "--engine", "torch", "--volumes", "2",
            "--cluster", client.scheduler.address]  # tracking: off on a cluster unless asked
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"Dask cluster {client.scheduler.address}: 2 workers" in result.output
    assert "tracking: off on a cluster" in result.output
    assert f"recording: {out} ({FRAMES} frames, {FRAMES // 2} volumes)" in result.output
    assert_same_store(out, single, every=2)  # workers' default: one torch thread (Dask sets OMP_NUM_THREADS=1)
    again = CliRunner().invoke(app, args)  # a complete store is not replaced without --overwrite
    assert again.exit_code == 2 and "already exists" in again.output


def test_batch_of_recordings_shares_the_workers(files, single, client, tmp_path) -> None:
    rec, model = files
    copy = tmp_path / "copy.zarr"
    shutil.copytree(rec, copy)
    out_dir = tmp_path / "batch"
    result = CliRunner().invoke(app, [
        "replay-batch", str(rec), str(copy), "--out-dir", str(out_dir), "--model", str(model),
        "--planes", str(PLANES), "--z-range", "-6", "6", "--engine", "torch", "--no-track",
        "--cluster", client.scheduler.address])  # fmt: skip
    assert result.exit_code == 0, result.output
    for name in ("rec-replay.zarr", "copy-replay.zarr"):
        assert f"recording: {out_dir / name} ({FRAMES} frames, {FRAMES} volumes)" in result.output
        assert_same_store(out_dir / name, single)


def test_track_detects_on_the_workers_and_links_in_the_client(single, client, tmp_path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker detects
    try:
        track_recording(single, tmp_path / "here.zarr", max_distance_um=2.0, max_gap=20, device="cpu",
                        overwrite=False)  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "cluster.zarr"
    result = CliRunner().invoke(app, ["track", str(single), "--out", str(out), "--device", "cpu",
                                      "--cluster", client.scheduler.address])  # fmt: skip
    assert result.exit_code == 0, result.output
    here, there = RecordingReader(tmp_path / "here.zarr").tracks(), RecordingReader(out).tracks()
    assert len(here["t"]) > FRAMES  # neurons found in the volumes
    for name, column in here.items():
        np.testing.assert_array_equal(there[name], column, err_msg=name)


@pytest.mark.parametrize(
    ("cluster", "message"),
    [
        ("tcp://127.0.0.1:9", "cannot reach the Dask scheduler at tcp://127.0.0.1:9"),
        ("local:none", "local:N needs a worker count"),
        ("somewhere", "neither local[:N] nor a scheduler address"),
    ],
)
def test_bad_cluster_is_one_clear_error(files, tmp_path, cluster: str, message: str) -> None:
    rec, model = files
    out = tmp_path / "never.zarr"
    result = CliRunner().invoke(app, ["replay", str(rec), "--out", str(out), "--model", str(model),
                                      "--no-track", "--cluster", cluster])  # fmt: skip
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not out.exists()


def test_tracking_is_refused_with_the_fix(files, client, tmp_path) -> None:
    rec, model = files
    cfg = load_config(None, {"inference": {"model": str(model)}, "recording": {"out": str(tmp_path / "t.zarr")}})
    with pytest.raises(ConfigError, match="--no-track"):
        replay_on_cluster(cfg, rec, client)


def test_killed_worker_costs_only_its_task(files, single, client, tmp_path) -> None:
    """Runs last: the nanny restarts the killed worker in the background."""
    rec, model = files
    out = tmp_path / "killed.zarr"
    pids = client.run(os.getpid)
    killed: list[tuple[str, int]] = []

    def kill_a_busy_worker(done) -> None:
        if killed:
            return
        busy = [address for address, keys in client.processing().items() if keys] or list(pids)
        killed.append((busy[0], len(client.processing()[busy[0]])))
        os.kill(pids[busy[0]], signal.SIGKILL)

    summary = replay_on_cluster(_config(out, model), rec, client, torch_threads=1, region_frames=REGION_FRAMES,
                                on_region=kill_a_busy_worker)  # fmt: skip
    assert killed and summary["regions_computed"] == FRAMES // REGION_FRAMES
    assert_same_store(out, single)
