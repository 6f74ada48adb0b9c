"""The stages the pipeline wires, as it calls them: camera or replay source, engine, tracker, readout, store,
publisher. Each stage package's classes satisfy these without importing them (checked by mypy --strict)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from wire.frames import FrameMeta

if TYPE_CHECKING:
    import torch

Traces = tuple[np.ndarray, np.ndarray, np.ndarray]
"""Recent dF/F of the tracked neurons: ids (M,), times (W,) s, dF/F (M, W)."""


class SourceCounts(Protocol):
    """A source's running totals (acquire.frames.SourceStats): the one count of frames lost."""

    @property
    def acquired(self) -> int: ...

    @property
    def lost(self) -> int: ...


@runtime_checkable
class FrameSource(Protocol):
    """Frames with their metadata: the camera (acquire.mm), the calibrating camera, or a recording. ``stats``
    counts what it delivered and the frames lost before them (the sum of their ``FrameMeta.lost_before``)."""

    @property
    def frame_shape(self) -> tuple[int, int]: ...

    @property
    def pixel_size_um(self) -> float: ...

    @property
    def stats(self) -> SourceCounts: ...

    def start(self) -> None: ...

    def frames(self) -> Iterator[tuple[np.ndarray, FrameMeta]]: ...

    def stop(self) -> None: ...


class VolumeEngine(Protocol):
    """Frames in, virtual volumes out: (B, H, W) uint16 -> (B, K, H, W) uint16, on ``device``."""

    @property
    def name(self) -> str: ...

    @property
    def device(self) -> torch.device: ...

    def run(self, frames: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class HandsOverDevice(Protocol):
    """An engine that also returns its volumes where it computed them, so tracking needs no copy back."""

    def run_with_device(self, frames: np.ndarray) -> tuple[np.ndarray, Any]: ...


class Snapshot(Protocol):
    """One volume's or frame's neurons: IDs, positions (um, z y x), brightness and dF/F."""

    @property
    def ids(self) -> np.ndarray: ...

    @property
    def positions_um(self) -> np.ndarray: ...

    @property
    def intensity(self) -> np.ndarray: ...

    @property
    def dff(self) -> np.ndarray: ...


class ReadSnapshot(Snapshot, Protocol):
    """A readout's snapshot: also how sure it is of each neuron (its signal-to-noise ratio)."""

    @property
    def confidence(self) -> np.ndarray: ...


class VolumeTracker(Protocol):
    """Detects and links neurons in each volume (an array, or a tensor on the engine's device)."""

    def update(self, t: int, time_s: float, volume: Any) -> Snapshot: ...

    def recent_traces(self) -> Traces: ...


class FrameReadout(Protocol):
    """Reads every calibrated reference neuron in each frame; None until the first calibration is applied."""

    def apply_scans(self, t: int) -> None: ...

    def update(self, t: int, time_s: float, frame: np.ndarray) -> ReadSnapshot | None: ...

    def fell_behind(self, frames: int) -> None: ...

    def recent_traces(self) -> Traces: ...

    def status(self) -> dict[str, Any]: ...


class Recorder(Protocol):
    """The recording store (storage.RecordingWriter): raw frames with metadata, volumes, tracks."""

    def write_frame(self, image: np.ndarray, record: FrameMeta) -> None: ...

    def write_volume(self, t: int, volume: np.ndarray) -> None: ...

    def write_tracks(
        self, t: int, ids: np.ndarray, positions_um: np.ndarray, intensity: np.ndarray, dff: np.ndarray
    ) -> None: ...


class Publisher(Protocol):
    """The latest-only PUB socket viewers subscribe to (wire.messages.Publisher)."""

    def publish(
        self, t: int, arrays: Mapping[str, np.ndarray], stats: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None: ...
