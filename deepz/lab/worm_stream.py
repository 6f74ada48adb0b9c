"""A ring of freshly rendered simulated worms resident on the training device: data that never repeats.

Slot k % resident holds worm k of the stream. Every refresh_every training steps the oldest worm is replaced
by the next one, rendered on the device (deepz.lab.sim_render), so a run draws its pairs from worms it has
never seen and never sees a retired worm again. Worm layouts (acquire.sim's rejection-sampled nuclei, about
0.1 s of Python each) can be drawn ahead by worker processes so the device never waits for them.
rendered_data() makes such a stream a recipe's TrainingData ([data.render]).
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from deepz.lab.scaffold import optics_of, sim_config
from deepz.lab.sim_render import TorchMicroscope, WormLayout, worm_layout, worm_seed
from infer.data import _digest, bright_level, scale_sample_indices
from infer.device_sampler import DevicePairSampler, DeviceStacks
from infer.manifest import Normalisation
from infer.train_config import TrainConfig
from infer.training_data import VAL_SEED, TrainingData


class WormStream:
    """Worms first..first+resident-1 rendered at start, then one more every refresh_every steps (advance())."""

    def __init__(self, microscope: TorchMicroscope, *, seed: int, resident: int, refresh_every: int = 1,
                 first: int = 0, workers: int = 0) -> None:
        if resident < 1 or refresh_every < 1:
            raise ValueError(f"A worm stream needs resident >= 1 and refresh_every >= 1 (got {resident}, "
                             f"{refresh_every}).")
        self.microscope, self.seed = microscope, seed
        self.resident, self.refresh_every, self.first = resident, refresh_every, first
        nz, (h, w) = len(microscope.z_um), microscope.shape
        dev = microscope.device
        self.stacks = DeviceStacks(torch.empty(resident, nz, h, w, device=dev),
                                   torch.empty(resident, nz, h, w, device=dev),
                                   microscope.z_um, microscope.sim.optics.pixel_size_um)
        self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) if workers else None
        self._workers = workers
        self._ahead: deque[tuple[int, Future[WormLayout]]] = deque()  # (worm, its layout being drawn)
        self.steps = 0
        self._fill(first + resident)

    @property
    def next_worm(self) -> int:
        """Index of the next worm the stream will render."""
        return self._next

    def _layout(self, k: int) -> WormLayout:
        """Layout of worm k: drawn here, or taken from the workers, who keep 2 * workers worms ahead."""
        if self._pool is None:
            return worm_layout(self.microscope.sim, self.seed, k)
        if self._ahead and self._ahead[0][0] != k:  # the stream jumped (resume): drop what was drawn ahead
            self._ahead.clear()
        while len(self._ahead) < 2 * self._workers:
            nxt = self._ahead[-1][0] + 1 if self._ahead else k
            self._ahead.append((nxt, self._pool.submit(worm_layout, self.microscope.sim, self.seed, nxt)))
        return self._ahead.popleft()[1].result()

    def _render(self, k: int) -> None:
        """Render worm k into its slot."""
        noisy, clean = self.microscope.render_stack(self._layout(k), worm_seed(self.seed, k))
        slot = k % self.resident
        self.stacks.noisy[slot] = noisy
        self.stacks.target[slot] = clean

    def _fill(self, next_worm: int) -> None:
        """Make the ring hold worms next_worm-resident .. next_worm-1 (as it does after they were streamed)."""
        for k in range(max(self.first, next_worm - self.resident), next_worm):
            self._render(k)
        self._next = next_worm

    def advance(self) -> None:
        """One training step passed: every refresh_every steps, replace the oldest worm with a fresh one."""
        self.steps += 1
        if self.steps % self.refresh_every == 0:
            self._render(self._next)
            self._next += 1

    def state(self) -> dict:
        """Where the stream stands (JSON), for resumable training."""
        return {"next_worm": self._next, "steps": self.steps}

    def set_state(self, state: dict) -> None:
        """Continue a stream: re-render the worms it held at that point."""
        self.steps = int(state["steps"])
        self._fill(int(state["next_worm"]))

    def scale_sample(self) -> np.ndarray:
        """Every 4th raw noisy pixel of up to 8 resident worms (what intensity_scale samples of stacks)."""
        idx = torch.from_numpy(scale_sample_indices(self.resident)).to(self.stacks.noisy.device)
        return self.stacks.noisy[idx][..., ::4, ::4].cpu().numpy().ravel()

    def close(self) -> None:
        """Stop the layout workers."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def rendered_data(config: TrainConfig, device: torch.device) -> TrainingData:
    """Fresh simulated worms rendered on the device (data.render); the stream's first val_worms validate."""
    from acquire.sim.config import SimConfig

    r = config.data.render
    sim = sim_config(r.shape, base=SimConfig.from_toml(Path(r.sim_config)) if r.sim_config else None)
    z = np.asarray(r.z_um(), np.float32)
    microscope = TorchMicroscope(sim, z, device)
    stream = WormStream(microscope, seed=r.seed, resident=r.resident, refresh_every=r.refresh_every,
                        first=r.val_worms, workers=r.layout_workers)
    offset = sim.camera.offset_adu
    norm = Normalisation(offset_adu=offset, scale_adu=bright_level(stream.scale_sample(), offset))
    val = None
    if r.val_worms:
        held_out = WormStream(microscope, seed=r.seed, resident=r.val_worms, first=0).stacks
        val = DevicePairSampler(held_out, replace(config.pairs, augment=False), offset_adu=offset,
                                scale_adu=norm.scale_adu, seed=VAL_SEED)
    optics = optics_of(sim.optics)
    return TrainingData(
        train=DevicePairSampler(stream.stacks, config.pairs, offset_adu=offset, scale_adu=norm.scale_adu,
                                seed=config.train.seed),
        val=val, norm=norm, stream=stream,
        # what the worms are, not how their layouts are computed: a run may resume with other layout_workers
        digest=_digest({"render": r.model_dump(mode="json", exclude={"layout_workers"}),
                        "sim": sim.model_dump(mode="json")}),
        manifest_fields=dict(optics=optics, axial_range_um=config.pairs.axial_range_um,
                             axial_step_um=r.z_step_um),
    )
