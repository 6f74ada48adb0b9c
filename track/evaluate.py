"""Scoring against ground truth: detection F1, identity switches, end-to-end tracking, trace correlation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist

from track.online import TrackState

__all__ = ["DetectionScore", "TrackingScore", "TrackingScorer", "detection_score", "match_points"]

UNMATCHED = -1


def match_points(
    pred: np.ndarray, true: np.ndarray, max_distance_um: float = 1.5
) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one minimum-distance matching of (N, 3) to (M, 3) points within max_distance_um: index pairs."""
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 3)
    true = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    if len(pred) == 0 or len(true) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dist = cdist(pred, true)
    cost = np.where(dist <= max_distance_um, dist, 1e6)
    r, c = linear_sum_assignment(cost)
    ok = cost[r, c] < 1e6
    return r[ok].astype(np.int64), c[ok].astype(np.int64)


@dataclass(frozen=True)
class DetectionScore:
    """True/false positives, misses and the derived precision, recall and F1."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / max(1, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return self.tp / max(1, self.tp + self.fn)

    @property
    def f1(self) -> float:
        return 2 * self.tp / max(1, 2 * self.tp + self.fp + self.fn)

    def __add__(self, other: DetectionScore) -> DetectionScore:
        return DetectionScore(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def to_dict(self) -> dict[str, float]:
        """Counts and rates as plain numbers (for JSON)."""
        return {**asdict(self), "precision": self.precision, "recall": self.recall, "f1": self.f1}


def detection_score(pred: np.ndarray, true: np.ndarray, max_distance_um: float = 1.5) -> DetectionScore:
    """Score predicted centres against true ones (one-to-one, within max_distance_um)."""
    r, _ = match_points(pred, true, max_distance_um)
    n_pred, n_true = len(np.asarray(pred).reshape(-1, 3)), len(np.asarray(true).reshape(-1, 3))
    return DetectionScore(len(r), n_pred - len(r), n_true - len(r))


@dataclass(frozen=True)
class TrackingScore:
    """Whole-run scores; tracked end to end = no identity switch and matched in >= 90% of the frames."""

    n_neurons: int
    n_frames: int
    duration_s: float
    detection: DetectionScore
    identity_switches: int
    switches_per_neuron_minute: float
    fraction_tracked_end_to_end: float
    median_trace_r: float
    n_trace_r: int
    coverage_threshold: float = 0.9
    notes: dict[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-able dict."""
        out = asdict(self)
        out["detection"] = self.detection.to_dict()
        return out


def crowded(positions_um: np.ndarray, resolution_um: tuple[float, float]) -> np.ndarray:
    """(N,) True for points with another point inside the (axial, lateral) resolution ellipsoid around them."""
    p = np.asarray(positions_um, dtype=np.float64).reshape(-1, 3)
    axial, lateral = resolution_um
    e = ((p[:, None, 0] - p[None, :, 0]) / axial) ** 2 + (
        np.hypot(p[:, None, 1] - p[None, :, 1], p[:, None, 2] - p[None, :, 2]) / lateral
    ) ** 2
    np.fill_diagonal(e, np.inf)
    return (e < 1).any(axis=1)


class TrackingScorer:
    """Accumulates per-frame truth and tracker output, then scores identities and traces over the run.

    Neurons that come within `resolution_um` (axial, lateral) of another neuron at some frame cannot always be
    told apart in the volumes; the score also reports end-to-end tracking over the others. The default is for
    wide-field stacks at 0.75 NA: 4.5 um is the axial FWHM of an isolated simulated nucleus, 2.5 um a nucleus
    diameter.
    """

    def __init__(self, max_distance_um: float = 1.5, resolution_um: tuple[float, float] = (4.5, 2.5)) -> None:
        self.max_distance_um = max_distance_um
        self.resolution_um = resolution_um
        self._crowded: np.ndarray | None = None
        self._times: list[float] = []
        self._truth_ids: np.ndarray | None = None
        self._assigned: list[np.ndarray] = []  # per frame: track id matched to each true neuron, or -1
        self._measured: list[
            np.ndarray
        ] = []  # per frame: dF/F measured for each true neuron, NaN if unmatched
        self._activity: list[np.ndarray] = []
        self._detection = DetectionScore(0, 0, 0)
        self._in_view: list[np.ndarray] = []

    def add(
        self,
        t_s: float,
        truth_ids: np.ndarray,
        truth_positions_um: np.ndarray,
        truth_activity: np.ndarray,
        state: TrackState,
        in_view: np.ndarray | None = None,
    ) -> None:
        """Record one frame: match the observed tracks to the true neurons.

        in_view (N,) bool marks neurons inside the imaged volume; the others are left out of every score, and
        tracks matched to them count neither as hits nor as false positives.
        """
        if self._truth_ids is None:
            self._truth_ids = np.asarray(truth_ids).copy()
        elif not np.array_equal(self._truth_ids, truth_ids):
            raise ValueError(
                "The set of true neuron ids changed between frames; score one simulated run at a time."
            )
        near = crowded(truth_positions_um, self.resolution_um)
        self._crowded = near if self._crowded is None else self._crowded | near
        r, c = match_points(state.positions_um, truth_positions_um, self.max_distance_um)
        view = np.ones(len(truth_ids), bool) if in_view is None else np.asarray(in_view, bool)
        self._in_view.append(view)
        n_true, n_out = int(view.sum()), int(np.count_nonzero(~view[c]))
        r, c = r[view[c]], c[view[c]]
        assigned = np.full(len(truth_ids), UNMATCHED, np.int64)
        assigned[c] = state.ids[r]
        measured = np.full(len(truth_ids), np.nan)
        measured[c] = state.dff[r]
        self._assigned.append(assigned)
        self._measured.append(measured)
        self._activity.append(np.asarray(truth_activity, dtype=np.float64))
        self._times.append(float(t_s))
        self._detection = self._detection + DetectionScore(
            len(r), len(state.ids) - len(r) - n_out, n_true - len(r)
        )

    def score(self) -> TrackingScore:
        """Scores over all frames added so far."""
        if not self._times:
            raise ValueError("No frames were added; call add() once per tracked volume before score().")
        always = np.stack(self._in_view, axis=1).all(axis=1)  # neurons in view for the whole run are scored
        assigned = np.stack(self._assigned, axis=1)[always]  # (N, T)
        n, n_frames = assigned.shape
        switches = np.zeros(n, np.int64)
        for i in range(n):
            seq = assigned[i][assigned[i] != UNMATCHED]
            switches[i] = int(np.count_nonzero(seq[1:] != seq[:-1]))
        coverage = (assigned != UNMATCHED).mean(axis=1)
        times = np.asarray(self._times)
        duration = float(times[-1] - times[0]) + (float(np.median(np.diff(times))) if n_frames > 1 else 0.0)
        r = self._trace_r(np.stack(self._measured, axis=1)[always], np.stack(self._activity, axis=1)[always])
        tracked = (switches == 0) & (coverage >= 0.9)
        resolvable = ~self._crowded[always]
        return TrackingScore(
            n_neurons=n,
            n_frames=n_frames,
            duration_s=duration,
            detection=self._detection,
            identity_switches=int(switches.sum()),
            switches_per_neuron_minute=float(switches.sum() / max(1e-9, n * duration / 60.0)),
            fraction_tracked_end_to_end=float(np.mean(tracked)),
            median_trace_r=float(np.median(r)) if len(r) else float("nan"),
            n_trace_r=len(r),
            notes={
                "mean_coverage": float(coverage.mean()),
                "neurons_left_out_of_view": int((~always).sum()),
                "resolution_um_axial_lateral": list(self.resolution_um),
                "neurons_with_unresolvable_neighbour": int((~resolvable).sum()),
                "fraction_tracked_end_to_end_resolvable": float(np.mean(tracked[resolvable]))
                if resolvable.any() else float("nan"),
            },
        )

    @staticmethod
    def _trace_r(measured: np.ndarray, truth: np.ndarray, min_samples: int = 10) -> np.ndarray:
        """Pearson r per neuron over frames where it was measured; neurons with flat truth are skipped."""
        out = []
        for m, a in zip(measured, truth, strict=True):
            ok = np.isfinite(m)
            if ok.sum() < min_samples or np.std(a[ok]) < 1e-6 or np.std(m[ok]) < 1e-12:
                continue
            out.append(float(np.corrcoef(m[ok], a[ok])[0, 1]))
        return np.asarray(out)
