"""LiveReadout: calibrate on a focal scan, then follow every reference neuron and read its brightness in
each single frame at focus; re-calibration keeps the IDs of neurons found again."""

from __future__ import annotations

import collections
import threading
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from track.activity import ActivityConfig, RunningDff
from track.detect import DetectConfig
from track.evaluate import match_points
from track.online import estimate_drift
from track.readout.calibrate import StampFitConfig
from track.readout.demix import Demixer, DemixResult, gram_matrix
from track.readout.dormant import DormantNeurons
from track.readout.entering import Entering, EntryConfig, find_entering, fit_blob
from track.readout.motion import DisplacementField, MotionConfig, motion_step, neighbour_weights
from track.readout.patches import Patches, cut_patches
from track.readout.reference import Reference, ResidualLook, ScanMemory, build_reference
from track.readout.shapes import ShapeConfig, ShapeReader
from track.readout.stamps import Optics, StampModel

__all__ = ["LiveReadout", "ReadoutConfig", "ReadoutState", "camera_rate_dff"]
TRAIL_FRAMES = 30
"""Followed positions kept to measure the velocity a re-scan is de-skewed with (0.3 s at 100 Hz)."""


DENOISE_STEP_PER_SQRT_S = 0.2
"""dF/F a trace is expected to wander per square-root second (a random walk's step, 0.02 per frame at
100 Hz): the denoising follows each trace with the Kalman gain of that step against the trace's own noise. A
neuron within 2 um of focus reads with a noise of about 0.01 per frame and keeps 0.8 of each frame's change,
one 4-6 um away (0.05 per frame) 0.3. Recomputed from the readout's brightness of 40 s runs (seeds 11 / 13 /
17), against no denoising: median r 0.967 / 0.979 / 0.974 -> 0.971 / 0.981 / 0.975, r >= 0.9 0.794 / 0.846 /
0.735 -> 0.817 / 0.862 / 0.742, mean r 0.930 / 0.941 / 0.900 -> 0.936 / 0.948 / 0.906 (0.1 and 0.4 per
square-root second within 0.01 of it)."""


def camera_rate_dff(rate_hz: float = 100.0) -> ActivityConfig:
    """dF/F settings for one sample per camera frame: the 20th percentile of the last 60 s, refreshed every
    0.5 s; after the first second each neuron's own level follows it with a 600 s time constant, and a
    trend shared by all neurons (bleaching, lamp drift) follows their median with 20 s.

    A baseline that moves with the activity it holds bends every trace. Measured on the brightness traces of
    60 s simulated runs (seeds 7 / 11): median r 0.728 / 0.764 with a 10 s window, 0.761 / 0.772 with 60 s.
    Within the first minute the window's percentile still swings with the activity it holds. Re-derived from
    the readout's brightness of 60 s runs (seeds 11 / 23), median r against the true activity: brightness
    0.966 / 0.963; dF/F with F0 following each neuron's percentile at 60 s 0.943 / 0.951, at 300 s 0.965 /
    0.963, but a bleach of e^(-t / 300 s) then drops that to 0.942 / 0.941 (60 s: 0.955 / 0.950); a level
    per neuron at 600 s times the shared trend at 20 s: 0.961 / 0.957 unbleached, 0.962 / 0.963 bleached.

    Each trace is then denoised (``denoise_step``, DENOISE_STEP_PER_SQRT_S).
    """
    per_s = max(1, round(rate_hz))
    return ActivityConfig(
        baseline_window=60 * per_s, baseline_every=max(1, per_s // 2), baseline_tau=600 * per_s,
        baseline_settle=per_s, common_tau=20 * per_s, denoise_step=DENOISE_STEP_PER_SQRT_S / np.sqrt(per_s),
    )  # fmt: skip


@dataclass(frozen=True)
class ReadoutConfig:
    """Detection, stamp fit, per-neuron stamps, motion and dF/F settings; Gram rebuild interval; motion
    steps after a scan."""

    # a scan's detections closer than 0.9 um across or 1.9 um along z are one nucleus (its blurred image
    # peaked twice): no two annotated nuclei of the four targettrack arrangements lie that close, while in
    # scans of six simulated worms such twin peaks lay 0.0-0.6 um across and 1.0-1.8 um along z. Each twin
    # followed as its own neuron split the nucleus' light and, when a re-scan gave the nucleus to the twin's
    # ID, switched its identity
    detect: DetectConfig = field(default_factory=lambda: DetectConfig(axial_min_distance_um=1.9))
    # a second look for neurons in each scan's residual once the stamps are fitted (ResidualLook; it doubles a
    # calibration's time). 60 s, seeds 11 / 13 / 17 / 23: traced 1.000 / 0.992 / 0.992 / 0.992 -> 1.000 on
    # all four, median r 0.964 / 0.972 / 0.953 / 0.959 -> 0.967 / 0.978 / 0.968 / 0.968, r >= 0.9 0.732 /
    # 0.813 / 0.684 / 0.681 -> 0.756 / 0.846 / 0.752 / 0.714
    second_look: ResidualLook | None = field(default_factory=ResidualLook)
    fit: StampFitConfig = field(default_factory=StampFitConfig)
    shapes: ShapeConfig = field(default_factory=ShapeConfig)
    motion: MotionConfig = field(default_factory=MotionConfig)
    activity: ActivityConfig = field(default_factory=camera_rate_dff)  # at a 100 Hz camera
    # frames between rebuilds of the demixing's Gram matrix (the projections are fresh every frame). The
    # stamps' overlaps change with the axial offset and sub-pixel positions: over 60 s (seeds 11 / 13) median
    # r 0.880 / 0.924 at 10, 0.893 / 0.926 at 3 (12 s diagnostic, seed 11: 0.944 at 10, 0.956 at 3, 0.957
    # at 1; refreshing only the diagonal every frame, 0.934: the Gram must stay consistent)
    gram_every: int = 3
    settle_steps: int = 20  # motion steps on the first frame after a scan (the specimen moved meanwhile)
    match_um: float = 2.0  # re-calibration: a new detection within this of a followed neuron keeps its ID
    # re-calibration: a neuron a scan missed (e.g. out of the field) is remembered this many scans (a minute
    # at the default 5 s re-scans) and gets its ID back when found where its neighbours' motion puts it
    remember_scans: int = 12
    # re-calibration: a re-found neuron's depth relative to the others goes this far towards where it was
    # followed (ScanMemory.depth_memory). 60 s, seeds 11 / 13 / 17 / 23: median r 0.939 / 0.960 / 0.921 /
    # 0.950 -> 0.940 / 0.961 / 0.927 / 0.951, r >= 0.9 for 0.630 / 0.715 / 0.594 / 0.664 -> 0.654 / 0.715 /
    # 0.586 / 0.664, position error 0.124 / 0.125 / 0.153 / 0.137 -> 0.114 / 0.117 / 0.144 / 0.128 um
    depth_memory: float = 0.5
    # re-calibration: remembered neurons at or just beyond the field's edge, whose light still reaches into
    # it, stay in the demixing model where their neighbours' motion puts them, and are followed on (without
    # informing the others' motion). 60 s, seeds 11 / 13 / 17 / 23: median r 0.961 / 0.968 / 0.929 / 0.955
    # -> 0.959 / 0.971 / 0.944 / 0.960, switches 0.008 / 0.017 / 0.032 / 0.053 -> 0.008 / 0.008 / 0.016 /
    # 0.018 per neuron-minute
    edge_neurons: bool = True
    # re-calibration: remembered neurons that the scan missed although their neighbours' motion puts them
    # inside the field, away from every neuron it found (most often one 3 um above or below a neighbour,
    # hidden by it in the scan), stay in the demixing model too, followed like the edge neurons; the found
    # neurons laterally within match_um of one lose their own corrections (which took its light in). 60 s,
    # seeds 11 / 13 / 17 / 23: traced 0.976 / 0.984 / 0.947 / 0.992 -> 1.000 / 0.992 / 0.992 / 0.992, median
    # r 0.959 / 0.971 / 0.944 / 0.960 -> 0.963 / 0.972 / 0.952 / 0.961, r >= 0.9 0.701 / 0.789 / 0.669 /
    # 0.706 -> 0.740 / 0.813 / 0.699 / 0.672
    hidden_neurons: bool = True
    # between scans: neurons entering the field, found in the residual near its edge, join the model. 60 s,
    # seeds 11 / 13 / 17 / 23: switches 0.008 / 0.008 / 0.008 / 0.018 -> 0.008 / 0 / 0 / 0 per neuron-minute,
    # r >= 0.9 0.740 / 0.813 / 0.699 / 0.689 -> 0.724 / 0.813 / 0.692 / 0.681, median r within 0.002
    entering: EntryConfig = field(default_factory=EntryConfig)
    # a neuron with less of its stamp's light in the frame than this share is not read (brightness 0, dF/F
    # NaN) and moves with its neighbours alone
    min_visible: float = 0.05

    def __post_init__(self) -> None:
        if self.gram_every < 1 or self.settle_steps < 1 or self.match_um <= 0 or self.remember_scans < 1:
            raise ValueError("gram_every, settle_steps and remember_scans must be >= 1 and match_um > 0.")
        if not 0 <= self.min_visible < 1:
            raise ValueError(f"min_visible must be in [0, 1), got {self.min_visible}.")
        if not 0 <= self.depth_memory < 1:
            raise ValueError(f"depth_memory must be in [0, 1), got {self.depth_memory}.")


@dataclass(frozen=True)
class ReadoutState:
    """One frame's readout of every reference neuron (rows aligned with ids)."""

    t_s: float
    ids: np.ndarray
    positions_um: np.ndarray  # (N, 3) z (relative to focus), y, x
    brightness: np.ndarray  # demixed, in the reference's units
    dff: np.ndarray  # denoised (ActivityConfig.denoise_step); NaN for a neuron not read (too little light)
    confidence: np.ndarray  # brightness / its standard error (a signal-to-noise ratio)
    axial_offset_um: float  # specimen's axial shift since the scan
    background: float


def _unsigned(positions_um: np.ndarray) -> np.ndarray:
    """(N, 3) positions with |z|: the distance from focus, as a defocused stamp shows it."""
    return np.column_stack([np.abs(positions_um[:, 0]), positions_um[:, 1:]])


def _one_table(stamps: StampModel) -> tuple[StampModel, int | None]:
    """``stamps`` as one table: with size groups, the most common group's (and that group)."""
    if stamps.groups is None:
        return stamps, None
    group = int(np.bincount(stamps.groups).argmax())
    return StampModel(stamps.defocus_um, stamps.radius_step_px, stamps.table[group]), group


class NeuronIds:
    """The next free neuron ID, shared by a readout and every copy made of it: live, a copy is re-calibrated
    while the readout reads on, and both give IDs to the neurons they add; from one counter, no ID is ever
    given to two neurons."""

    def __init__(self) -> None:
        self._next = 0
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict) -> NeuronIds:
        return self  # shared, not copied

    def __getstate__(self) -> dict:
        """Pickled (e.g. to another process) as the next free ID: a lock does not travel."""
        with self._lock:
            return {"next": self._next}

    def __setstate__(self, state: dict) -> None:
        self._next, self._lock = state["next"], threading.Lock()

    def peek(self) -> int:
        """The next ID that ``take`` would give (not reserved)."""
        with self._lock:
            return self._next

    def take(self, n: int) -> np.ndarray:
        """``n`` IDs no one has had."""
        with self._lock:
            first, self._next = self._next, self._next + n
        return first + np.arange(n, dtype=np.int64)

    def skip_to(self, first_free: int) -> None:
        """IDs below ``first_free`` are in use (e.g. a reference restored from a recording)."""
        with self._lock:
            self._next = max(self._next, first_free)


class LiveReadout:
    """Calibrate with a focal scan, then ``update`` once per frame at focus, in time order."""

    def __init__(self, config: ReadoutConfig | None = None, device: str | torch.device = "cpu") -> None:
        self.config = config or ReadoutConfig()
        self.device = torch.device(device)
        self.reference: Reference | None = None
        self.optics: Optics | None = None
        self._dff = RunningDff(self.config.activity)
        self._demixer = Demixer()
        self._dormant = DormantNeurons(remember_scans=self.config.remember_scans)
        self._ids = NeuronIds()
        self._recalibrated_from: tuple[np.ndarray, np.ndarray] | None = None  # ids, positions (catch_up)

    def calibrate(
        self, stack: np.ndarray | torch.Tensor, z_um: np.ndarray, pixel_size_um: float, optics: Optics
    ) -> Reference:
        """Build the reference from a (Z, H, W) scan at focus offsets z_um (um, relative to focus)."""
        self.optics = optics
        reference = build_reference(
            stack, z_um, pixel_size_um, optics, detect=self.config.detect, fit=self.config.fit,
            shapes=self.config.shapes, device=self.device, second_look=self.config.second_look,
        )  # fmt: skip
        self._dff = RunningDff(self.config.activity)
        self._dormant = DormantNeurons(remember_scans=self.config.remember_scans)
        self._ids = NeuronIds()
        self.follow(reference)
        return reference

    def recalibrate(
        self, stack: np.ndarray | torch.Tensor, z_um: np.ndarray, plane_period_s: float | None = None
    ) -> Reference:
        """A new scan: neurons found again (near where they were followed to, or where remembered ones are
        predicted to be) keep their IDs, new ones get new IDs, and neurons not found again are remembered.

        ``plane_period_s``: the time between the scan's planes (taken in the order of ``z_um``). With it,
        each neuron's position is moved from when the scan passed its depth to the scan's end, at the
        velocity the followed neurons around it had just before the scan.
        """
        if self.reference is None or self.optics is None:
            raise RuntimeError("recalibrate needs a first calibration; call calibrate first.")
        old = self.reference
        cfg = self.config
        followed = self.positions_um()
        self._recalibrated_from = (old.ids.copy(), followed.copy())
        earlier = ScanMemory(followed, old.group_evidence, cfg.match_um, depth_memory=cfg.depth_memory)
        fresh = build_reference(
            stack, z_um, old.pixel_size_um, self.optics, detect=cfg.detect, fit=cfg.fit, shapes=cfg.shapes,
            first_id=self._ids.peek(), device=self.device, earlier=earlier, second_look=cfg.second_look,
        )  # fmt: skip
        if plane_period_s is not None and plane_period_s > 0:
            fresh = self._deskewed(fresh, np.asarray(z_um, np.float64), plane_period_s)
        return self.carry_over(fresh)

    def catch_up(self, current: LiveReadout) -> None:
        """Take over from ``current``, which kept reading frames while a copy of it (this readout) was
        re-calibrated on a scan that ended when the copy was taken (live, a calibration takes a second or
        more, and the specimen moves on meanwhile). Each neuron moves on by what ``current`` followed for it
        since, or a neuron it did not follow by what it followed around it (Gaussian weights at
        ``pool_um``); the axial offset by the median axial move; the dF/F baselines are ``current``'s (they
        saw every frame)."""
        if self._recalibrated_from is None or self.reference is None or current.reference is None:
            raise RuntimeError("catch_up needs a readout re-calibrated on a copy of the one it takes over.")
        then_ids, then = self._recalibrated_from
        _, at_then, at_now = np.intersect1d(then_ids, current.reference.ids, return_indices=True)
        self._recalibrated_from = None
        if len(at_then) == 0:
            return
        moved = current.positions_um()[at_now] - then[at_then]  # (M, 3)
        mine = self.positions_um()
        distance2 = ((mine[:, None, 1:] - then[at_then][None, :, 1:]) ** 2).sum(axis=2)
        weights = np.exp(-0.5 * distance2 / self.config.motion.pool_um**2) + 1e-12  # none near: the mean
        lateral = (weights @ moved[:, 1:]) / weights.sum(axis=1)[:, None]
        _, rows, theirs = np.intersect1d(self.reference.ids, then_ids[at_then], return_indices=True)
        lateral[rows] = moved[theirs, 1:]  # a neuron followed meanwhile moves as it was followed
        shift = lateral / self.reference.pixel_size_um
        self._centres = self._centres + torch.as_tensor(shift, dtype=torch.float32, device=self.device)
        self._axial += float(np.median(moved[:, 0]))
        self._trail.clear()
        self._dff = current._dff
        kept = np.union1d(self.reference.ids, self._dormant.ids)
        self._dff.forget(np.setdiff1d(self._dff.track_ids(), kept))

    def velocity_um_s(self) -> np.ndarray | None:
        """(N, 2) lateral velocity of each followed neuron (row, col) um/s over the last frames, or None
        before enough of them (at least 0.05 s)."""
        if len(self._trail) < 2 or self.reference is None:
            return None
        (t0, first), (t1, last) = self._trail[0], self._trail[-1]
        if t1 - t0 < 0.05:
            return None
        return ((last - first).double().cpu().numpy() * self.reference.pixel_size_um) / (t1 - t0)

    def _deskewed(self, fresh: Reference, z_um: np.ndarray, plane_period_s: float) -> Reference:
        """``fresh`` with each neuron moved to where it was at the scan's end: a focal scan takes a while
        (49 planes: 0.49 s at 100 Hz), so a neuron was found when the scan passed its depth; it moved on at
        the velocity of the followed neurons around it (Gaussian weights at ``pool_um``; the neurons placed by
        prediction or added between scans echo the others' motion and count for nothing)."""
        velocity = self.velocity_um_s()
        if velocity is None or len(fresh.ids) == 0:
            return fresh
        followed = self.positions_um()
        distance2 = ((fresh.positions_um[:, None, :] - followed[None, :, :]) ** 2).sum(axis=2)
        weights = np.exp(-0.5 * distance2 / self.config.motion.pool_um**2) * self._informs.cpu().numpy()[None]
        total = weights.sum(axis=1)
        local = (weights @ velocity) / np.maximum(total, 1e-12)[:, None]
        local[total < 1e-6] = 0.0  # nobody followed nearby: left where the scan found it
        plane = np.abs(fresh.positions_um[:, :1] - z_um[None, :]).argmin(axis=1)
        before_end_s = (len(z_um) - plane - 0.5) * plane_period_s
        positions = fresh.positions_um.copy()
        positions[:, 1:] += local * before_end_s[:, None]
        return replace(fresh, positions_um=positions)

    def carry_over(self, fresh: Reference) -> Reference:
        """Follow ``fresh`` from now on (a new scan's reference): its neurons near where the current ones were
        followed to take their IDs, then those near where remembered neurons (ones earlier scans missed, e.g.
        out of the field) are predicted to be take theirs, the others get new IDs; returns it with those IDs.
        Followed neurons it missed are remembered (``remember_scans``)."""
        if self.reference is None:
            raise RuntimeError("carry_over needs a reference being followed; call calibrate first.")
        old, match_um = self.reference, self.config.match_um
        followed = self.positions_um()
        shift = estimate_drift(followed, fresh.positions_um, search_um=3 * match_um)
        new_row, old_row = match_points(fresh.positions_um, followed + shift, match_um)
        ids = fresh.ids.copy()
        ids[new_row] = old.ids[old_row]
        self._dormant.take(ids[new_row])  # found again, also those modelled without a scan finding them
        unmatched = np.setdiff1d(np.arange(len(ids)), new_row)
        remembered, predicted = self._dormant.predict(old.ids, followed)
        back_row, back = match_points(fresh.positions_um[unmatched], predicted + shift, match_um)
        ids[unmatched[back_row]] = remembered[back]
        self._dormant.take(remembered[back])
        new = np.setdiff1d(unmatched, unmatched[back_row])
        ids[new] = self._ids.take(len(new))
        expired = self._dormant.age()
        self._dff.forget(expired)
        missed = np.setdiff1d(np.arange(len(old.ids)), old_row)
        missed = missed[~np.isin(old.ids[missed], expired)]  # modelled unfound for remember_scans: dropped
        found = fresh.positions_um[new_row]
        groups = None if old.stamps.groups is None else old.stamps.groups[missed]
        evidence = None if old.group_evidence is None else old.group_evidence[missed]
        self._dormant.add(old.ids[missed], followed[missed] + shift, ids[new_row], found, groups, evidence)
        reference = replace(fresh, ids=ids)
        if self.config.edge_neurons or self.config.hidden_neurons:
            reference = self._with_missed_neurons(reference)
        self.follow(reference)
        return reference

    def _with_missed_neurons(self, reference: Reference) -> Reference:
        """``reference`` with the remembered neurons its scan did not find, where their neighbours' motion
        puts them: at or beyond the field's edge while their light still reaches into it (``edge_neurons``),
        or inside the field, hidden above or below a neuron the scan found (within ``match_um`` laterally,
        further in 3D; ``hidden_neurons``). Modelled, their light is not read as their neighbours', and they
        are followed on under their IDs."""
        remembered, predicted = self._dormant.predict(reference.ids, reference.positions_um)
        if len(remembered) == 0:
            return reference
        px, (h, w) = reference.pixel_size_um, reference.frame_shape
        row, col = predicted[:, 1] / px, predicted[:, 2] / px
        beyond_px = np.max([-row, row - (h - 1), -col, col - (w - 1)], axis=0)  # < 0: inside the field
        reach_px = np.array([reference.stamps.half_for(abs(z)) for z in predicted[:, 0]])
        offset = predicted[:, None] - reference.positions_um[None]  # (M, N, 3): to each neuron the scan found
        nearest = np.linalg.norm(offset, axis=2).min(axis=1)
        lateral = np.linalg.norm(offset[..., 1:], axis=2)
        inside = beyond_px <= -self.config.match_um / px  # else the scan could not have found it
        hidden = lateral.min(axis=1, initial=np.inf) < self.config.match_um  # behind or before a found one
        keep = (
            ((inside & hidden & self.config.hidden_neurons) | (~inside & self.config.edge_neurons))
            & (beyond_px < reach_px)
            & (np.abs(predicted[:, 0]) <= np.abs(reference.stamps.defocus_um).max())
            & (nearest > self.config.match_um)  # not a neuron the scan found
        )  # fmt: skip
        if not keep.any():
            return reference
        groups, evidence = self._dormant.groups_of(remembered[keep])  # still remembered: scans count on
        kept = reference.with_neurons(remembered[keep], predicted[keep], groups, evidence)
        if reference.shapes is None:
            return kept
        # the scan's residual around a found neuron laterally near a kept one, within its correction's depth
        # range, held the kept one's light, which its correction took in: the kept neuron models it now
        hiding = (
            (lateral[keep] < self.config.match_um)
            & (np.abs(offset[keep, :, 0]) < reference.shapes.max_defocus_um)
        ).any(axis=0)
        return kept.without_corrections(np.concatenate([hiding, np.zeros(int(keep.sum()), bool)]))

    def follow(self, reference: Reference) -> None:
        """Start following ``reference`` from its scan positions (calibrate and recalibrate call this; also
        for a reference built elsewhere, e.g. restored from a recording)."""
        if reference.frame_shape[0] * reference.frame_shape[1] == 0:
            raise ValueError("The calibration frames are empty.")
        self.reference = reference
        self._ids.skip_to(int(reference.ids.max(initial=-1)) + 1)  # IDs are never reused
        px = reference.pixel_size_um
        lateral = reference.positions_um[:, 1:] / px
        self._centres = torch.as_tensor(lateral, dtype=torch.float32, device=self.device)
        self._scan_centres = self._centres.clone()
        self._field = self._field_over(reference)
        self._depth = torch.as_tensor(reference.positions_um[:, 0], dtype=torch.float32, device=self.device)
        self._axial = 0.0
        reach = float(np.abs(reference.positions_um[:, 0]).max()) + 2.0
        self._half = reference.stamps.half_for(reach)
        self._shapes = None
        if reference.shapes is not None:
            self._shapes = ShapeReader(reference.shapes, self.device)
            self._half = max(self._half, reference.shapes.half_px)
        # neurons placed by prediction follow the others' motion but do not inform it
        self._informs = torch.as_tensor(reference.found_mask(), dtype=torch.float32, device=self.device)
        self._demixer = Demixer()
        self._since_scan = 0
        self._residual_sum: torch.Tensor | None = None
        self._residual_frames = 0
        self._anchored: torch.Tensor | None = None  # 0: added since the last look at the edge, still settling
        self._added = np.zeros(len(reference), bool)  # added between scans: depth refitted at every look
        self._trail: collections.deque[tuple[float, torch.Tensor]] = collections.deque(maxlen=TRAIL_FRAMES)

    def _field_over(self, reference: Reference) -> DisplacementField:
        """The motion field over ``reference``'s scan positions (after a scan, or once neurons joined)."""
        positions = torch.as_tensor(reference.positions_um, device=self.device)
        return DisplacementField.from_positions(positions, self.config.motion, reference.pixel_size_um)

    def positions_um(self) -> np.ndarray:
        """Where the reference neurons are now (N, 3) um: z relative to focus, y, x."""
        if self.reference is None:
            raise RuntimeError("No reference yet; call calibrate first.")
        px = self.reference.pixel_size_um
        z = (self._depth + self._axial).double().cpu().numpy()
        return np.column_stack([z, self._centres.double().cpu().numpy() * px])

    def update(self, frame: np.ndarray | torch.Tensor, t_s: float) -> ReadoutState:
        """Follow the motion in one (H, W) frame at focus and read every reference neuron's brightness."""
        if self.reference is None:
            raise RuntimeError("No reference yet; call calibrate with a focal scan before update.")
        y = self._frame_tensor(frame)
        cfg = self.config
        steps = cfg.settle_steps if self._since_scan == 0 else 1
        for step in range(steps):
            settling = step < steps - 1
            fresh = settling or self._since_scan % cfg.gram_every == 0
            result, sigma, residual = self._step(y, fresh_gram=fresh)
        self._since_scan += 1
        self._trail.append((float(t_s), self._centres.clone()))
        n = len(self.reference)
        confidence = result.brightness / (sigma * result.unit_error).clamp(min=1e-12)
        # everything the host needs of this frame in one copy: on a GPU each copy waits for the device
        axial = torch.as_tensor(self._axial, dtype=torch.float64, device=self.device)
        host = torch.cat([
            result.brightness.double(), confidence.double(), (self._depth + self._axial).double(),
            self._centres.double().flatten(), torch.stack([axial, result.background]),
        ]).cpu().numpy()  # fmt: skip
        brightness, confidence = host[:n].astype(np.float32), host[n : 2 * n].astype(np.float32)
        lateral = host[3 * n : 5 * n].reshape(n, 2) * self.reference.pixel_size_um
        positions = np.column_stack([host[2 * n : 3 * n], lateral])
        self._axial, background = float(host[-2]), float(host[-1])  # a float again between frames
        ids = self.reference.ids
        read = self._read_host
        dff = np.full(len(ids), np.nan, np.float32)  # a neuron not read has no sample (NaN: no value)
        dff[read] = self._dff.update(ids[read], brightness[read])
        state = ReadoutState(
            t_s=float(t_s),
            ids=ids.copy(),
            positions_um=positions,
            brightness=brightness,
            dff=dff,
            confidence=confidence,
            axial_offset_um=self._axial,
            background=background,
        )
        if cfg.entering.every > 0:  # neurons it adds are read from the next frame on
            self._watch_edge(residual, result.brightness)
        return state

    def _step(self, y: torch.Tensor, fresh_gram: bool) -> tuple[DemixResult, torch.Tensor, torch.Tensor]:
        """Demix at the current positions, then move the neurons by one motion step against the residual;
        the demixing, the residual's RMS (the noise level of the confidence) and the residual frame."""
        ref = self.reference
        patches = cut_patches(self._centres, self._half, ref.frame_shape)
        defocus = self._depth + self._axial
        stamps = ref.stamps.evaluate(patches, defocus, derivatives=True)
        if self._shapes is not None:
            stamps = self._shapes.add_to(stamps, patches, defocus)
        rebuild = fresh_gram or not self._demixer.has_gram
        if rebuild:  # the read mask is held until the next rebuild: the Gram matrix and projections agree
            self._read = self._readable(patches, stamps.value)
            self._read_host = self._read.cpu().numpy() > 0  # copied to the host once per rebuild
        stamps.value.mul_(self._read[:, None, None])  # a neuron not read is left out of the model
        if rebuild:
            self._demixer.set_gram(gram_matrix(patches, stamps.value))
            self._weights = neighbour_weights(self._centres * ref.pixel_size_um, self.config.motion)
        projections = torch.cat([(stamps.value * patches.gather(y)).sum(dim=(1, 2)), y.sum()[None]])
        result = self._demixer.solve(projections)
        residual = y - result.background - patches.render(result.brightness[:, None, None] * stamps.value)
        move = motion_step(
            patches, residual, patches.gather(residual), stamps, result.brightness, self._weights,
            self.config.motion, self._centres - self._scan_centres, self._field, self._informs,
            self._anchored,
        )  # fmt: skip
        self._centres = self._centres + move.lateral_px
        self._axial += move.axial_um
        return result, residual.pow(2).mean().sqrt(), residual

    def _watch_edge(self, residual: torch.Tensor, brightness: torch.Tensor) -> None:
        """Average the residual over ``entering.every`` frames; then settle the neurons added at the last look
        and add the neurons entering the field that it shows (``find_entering``) to the model."""
        self._residual_sum = residual if self._residual_sum is None else self._residual_sum + residual
        self._residual_frames += 1
        if self._residual_frames < self.config.entering.every:
            return
        mean = self._residual_sum / self._residual_frames
        self._residual_sum, self._residual_frames = None, 0
        ref = self.reference
        found = ref.found_mask()
        if not found.any():
            return
        stamps, group = _one_table(ref.stamps)
        max_defocus_um = float(np.abs(ref.positions_um[found, 0]).max())
        if self._added.any():
            self._refit_added(mean, brightness, stamps, max_defocus_um)
        entering = find_entering(
            mean, self._centres, stamps, ref.pixel_size_um, float(np.median(ref.brightness[found])),
            max_defocus_um, self.config.entering,
        )  # fmt: skip
        if len(entering):
            self.add_neurons(entering, group)

    def _refit_added(
        self, mean: torch.Tensor, brightness: torch.Tensor, stamps: StampModel, max_defocus_um: float
    ) -> None:
        """The neurons added between scans: each one's depth refitted to its own light in the averaged
        residual (its neighbours read less of that light at each look); the ones added at the last look then
        have their displacement drawn to the field from where they followed their own light to."""
        rows = torch.as_tensor(np.flatnonzero(self._added), device=self.device)
        ref = self.reference
        defocus = self._depth[rows] + self._axial
        patches = cut_patches(self._centres[rows], stamps.half_for(max_defocus_um), ref.frame_shape)
        own = patches.render(brightness[rows, None, None] * stamps.evaluate(patches, defocus).value)
        positions = ref.positions_um.copy()
        for row, centre, now in zip(rows.tolist(), self._centres[rows], defocus.tolist(), strict=True):
            side = int(np.sign(now))  # the side of focus it was placed on stays
            _, depth, _ = fit_blob(mean + own, centre, stamps, max_defocus_um, reach_px=0, side=side)
            self._depth[row] = depth - self._axial
            positions[row, 0] = depth - self._axial
        if self._anchored is not None:  # where the scan would have seen them: moved since as the field says
            settling = torch.nonzero(self._anchored == 0).flatten()
            predicted, _ = self._field.predict(self._informs + 1e-6, self._centres - self._scan_centres)
            self._scan_centres[settling] = self._centres[settling] - predicted[settling].float()
            scan_um = self._scan_centres[settling].double().cpu().numpy() * ref.pixel_size_um
            positions[settling.cpu().numpy(), 1:] = scan_um
        self.reference = refitted = replace(ref, positions_um=positions)
        if self._anchored is not None:
            self._field = self._field_over(refitted)
            self._anchored = None

    def add_neurons(self, entering: Entering, group: int | None = None) -> np.ndarray:
        """Model and follow more neurons from now on (e.g. ones entering the field between scans) at their
        current (M, 3) positions, without informing the others' motion; a remembered neuron predicted within
        ``match_um`` (the side of focus aside, which a frame seldom tells) gets its ID back and its side, the
        others new IDs (returned). ``group``: their stamps' size group."""
        if self.reference is None:
            raise RuntimeError("add_neurons needs a reference being followed; call calibrate first.")
        ref, px, m = self.reference, self.reference.pixel_size_um, len(entering)
        ids = np.full(m, -1, np.int64)
        if m == 0:
            return ids
        remembered, predicted = self._dormant.predict(ref.ids, self.positions_um())
        unmodelled = ~np.isin(remembered, ref.ids)  # neurons held in the model stay remembered too
        remembered, predicted = remembered[unmodelled], predicted[unmodelled]
        now = entering.positions_um[:, 0].copy()
        row, back = match_points(_unsigned(entering.positions_um), _unsigned(predicted), self.config.match_um)
        ids[row] = remembered[back]
        now[row] = np.abs(now[row]) * np.sign(predicted[back, 0])  # the side of focus it was followed on
        self._dormant.take(remembered[back])
        new = ids < 0
        ids[new] = self._ids.take(int(new.sum()))
        centres = torch.as_tensor(entering.positions_um[:, 1:] / px, dtype=torch.float32, device=self.device)
        depth = now - self._axial
        groups = None if ref.stamps.groups is None else np.full(m, 0 if group is None else group, np.int64)
        # placed where they are now (the scan's positions of the others are where they were then) until the
        # next look at the edge draws them to the field (_refit_added)
        joined = ref.with_neurons(ids, np.column_stack([depth, entering.positions_um[:, 1:]]), groups)
        self.reference = joined
        self._centres = torch.cat([self._centres, centres])
        self._scan_centres = torch.cat([self._scan_centres, centres])
        self._depth = torch.cat([self._depth, torch.tensor(depth, dtype=torch.float32, device=self.device)])
        self._informs = torch.cat([self._informs, torch.zeros(m, device=self.device)])
        self._field = self._field_over(joined)
        if joined.shapes is not None:
            self._shapes = ShapeReader(joined.shapes, self.device)
        self._demixer = Demixer()  # the Gram matrix and read mask are rebuilt on the next frame
        self._added = np.concatenate([self._added, np.ones(m, bool)])
        settled = torch.ones(len(ref), device=self.device) if self._anchored is None else self._anchored
        self._anchored = torch.cat([settled, torch.zeros(m, device=self.device)])
        self._trail = collections.deque(
            ((t, torch.cat([c, centres])) for t, c in self._trail), maxlen=TRAIL_FRAMES
        )  # fmt: skip
        return ids

    def _readable(self, patches: Patches, values: torch.Tensor) -> torch.Tensor:
        """(N,) 1 for neurons with at least ``min_visible`` of their stamp's light in the frame, else 0: from
        a few pixels of its tail, a neuron's brightness would multiply their noise many-fold (seen: 1.8e7,
        against a median of 4.5e4, with 1e-7 of its light in the frame), and its motion with it."""
        inside = (values * patches.inside).sum(dim=(1, 2))
        total = values.sum(dim=(1, 2)).clamp(min=1e-30)
        return (inside >= self.config.min_visible * total).to(values.dtype)

    def _frame_tensor(self, frame: np.ndarray | torch.Tensor) -> torch.Tensor:
        """The frame as float32 on the device; shape and finiteness checked against the reference."""
        tensor = frame if isinstance(frame, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frame))
        if tuple(tensor.shape) != self.reference.frame_shape:
            raise ValueError(
                f"Frame shape {tuple(tensor.shape)} differs from the calibration scan's "
                f"{self.reference.frame_shape}."
            )
        # checked before the copy to the device: a host frame is checked without waiting for the device
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum())):
            raise ValueError("The frame contains NaN or infinite values.")
        return tensor.to(self.device).float()
