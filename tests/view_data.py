"""Test data for the viewer tests: small realistic snapshots and small real recordings (storage's writer)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepz.lab.view_bench import ViewBenchConfig, synthetic_states
from display.state import ViewState
from storage import RecordingWriter
from wire.frames import FrameMeta
from storage.synthetic import blob_volume

SMALL = ViewBenchConfig(height=64, width=96, planes=6, neurons=12, trace_window=40, distinct_states=3)
REC_SHAPE = (64, 96)
REC_PLANES = np.linspace(-6.0, 6.0, 5)
REC_FRAMES = 40
REC_VOLUME_EVERY = 5
REC_IDS = np.array([3, 8, 11, 20])


def small_states() -> list[ViewState]:
    """A few 64 x 96 snapshots with 6 planes and 12 tracked neurons."""
    return synthetic_states(SMALL)


def message_arrays(state: ViewState) -> dict[str, np.ndarray]:
    """The pipeline's message arrays for a snapshot (wire.messages names)."""
    names = ("frame", "volume", "track_ids", "track_positions_um", "trace_ids", "traces_dff", "trace_t")
    return {name: getattr(state, name) for name in names}


def write_recording(path: Path) -> Path:
    """A complete 40-frame, 100 Hz recording: 5-plane volumes, 4 tracked neurons and dF/F every 5 frames."""
    rng = np.random.default_rng(1)
    base = np.array([[0.0, 8.0, 10.0], [2.0, 12.0, 20.0], [-3.0, 6.0, 25.0], [4.0, 15.0, 5.0]])
    with RecordingWriter(
        path,
        frame_shape=REC_SHAPE,
        pixel_size_um=0.325,
        planes_um=REC_PLANES,
        volume_every=1,
        attrs={"source": "viewer tests"},
    ) as writer:
        for t in range(REC_FRAMES):
            writer.write_frame(
                blob_volume(REC_SHAPE, n_blobs=20, seed=t),
                FrameMeta(t, t, t * 0.01, 100 + t * 0.01, 0.0, 9.0, int(t == 7), t % 5 == 3),
            )
            if t % REC_VOLUME_EVERY == 0:
                writer.write_volume(t, blob_volume((len(REC_PLANES), *REC_SHAPE), n_blobs=30, seed=100 + t))
                positions = base + rng.normal(0, 0.2, base.shape)
                dff = np.sin(t / 7 + np.arange(len(REC_IDS)))
                writer.write_tracks(t, REC_IDS, positions, 1000 + 100 * dff, dff)
        writer.close(summary={"frames": REC_FRAMES})
    return path
