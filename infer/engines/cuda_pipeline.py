"""Double-buffered GPU pipeline: pinned host buffers, uploads and downloads on their own streams.

Batch i+1 uploads and batch i-1 downloads while batch i computes; each slot owns fixed device buffers,
so fixed-shape work (CUDA graphs, TensorRT contexts) can be bound to them once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

Compute = Callable[[int, torch.Tensor, torch.Tensor], None]


@dataclass
class _Slot:
    """One in-flight batch: pinned host and device buffers plus the events that order them."""

    host_in: torch.Tensor
    dev_in: torch.Tensor
    dev_out: torch.Tensor
    host_out: torch.Tensor
    uploaded: torch.cuda.Event
    computed: torch.cuda.Event
    downloaded: torch.cuda.Event
    frames: int = 0


class CudaPipeline:
    """Frames (b, H, W) uint16 -> volumes (b, K, H, W) uint16 through `compute(slot, dev_in, dev_out)`.

    `compute` enqueues work on the current (compute) stream that reads dev_in (B, H, W) and fills
    dev_out (B, K, H, W); it must not synchronise. Copies use pinned memory on separate streams.
    """

    def __init__(
        self,
        batch: int,
        frame_shape: tuple[int, int],
        planes: int,
        device: torch.device,
        compute: Compute,
        slots: int = 2,
    ) -> None:
        h, w = frame_shape
        self.device = device
        self.compute = compute
        self.upload_stream = torch.cuda.Stream(device)
        self.compute_stream = torch.cuda.Stream(device)
        self.download_stream = torch.cuda.Stream(device)
        self.slots = [
            _Slot(
                host_in=torch.empty((batch, h, w), dtype=torch.uint16, pin_memory=True),
                dev_in=torch.zeros((batch, h, w), dtype=torch.uint16, device=device),
                dev_out=torch.empty((batch, planes, h, w), dtype=torch.uint16, device=device),
                host_out=torch.empty((batch, planes, h, w), dtype=torch.uint16, pin_memory=True),
                uploaded=torch.cuda.Event(),
                computed=torch.cuda.Event(),
                downloaded=torch.cuda.Event(),
            )
            for _ in range(slots)
        ]
        self._next = 0

    def submit(self, frames: np.ndarray) -> int:
        """Queue one batch (b <= B frames); returns the slot to `collect` from. Does not wait for the GPU."""
        index = self._next
        self._next = (index + 1) % len(self.slots)
        slot = self.slots[index]
        slot.downloaded.synchronize()  # the slot's previous batch is fully out of its buffers
        slot.frames = frames.shape[0]
        slot.host_in.numpy()[: slot.frames] = frames
        with torch.cuda.stream(self.upload_stream):
            slot.dev_in.copy_(slot.host_in, non_blocking=True)
            slot.uploaded.record()
        self.compute_stream.wait_event(slot.uploaded)
        with torch.cuda.stream(self.compute_stream):
            self.compute(index, slot.dev_in, slot.dev_out)
            slot.computed.record()
        self.download_stream.wait_event(slot.computed)
        with torch.cuda.stream(self.download_stream):
            slot.host_out.copy_(slot.dev_out, non_blocking=True)
            slot.downloaded.record()
        return index

    def collect(self, index: int) -> np.ndarray:
        """Wait for a submitted batch and return its volumes (b, K, H, W) as a new array."""
        slot = self.slots[index]
        slot.downloaded.synchronize()
        return slot.host_out.numpy()[: slot.frames].copy()

    def device_copy(self, index: int) -> torch.Tensor:
        """A device copy of a submitted batch's volumes (on the current stream), taken before the slot is
        reused: volumes for work on the GPU that never go through the host."""
        slot = self.slots[index]
        slot.computed.synchronize()
        return slot.dev_out[: slot.frames].clone()

    def run(self, frames: np.ndarray) -> np.ndarray:
        """One batch in, its volumes out (no overlap with other batches)."""
        return self.collect(self.submit(frames))

    def run_many(self, batches: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Volumes for each batch in order, keeping every slot busy (upload / compute / download overlap)."""
        pending: deque[int] = deque()
        for frames in batches:
            pending.append(self.submit(frames))
            if len(pending) == len(self.slots):
                yield self.collect(pending.popleft())
        while pending:
            yield self.collect(pending.popleft())
