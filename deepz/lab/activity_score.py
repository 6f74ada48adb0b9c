"""Scores of per-neuron activity readouts against the simulator's truth, the same way for every method.

A true neuron is scored at the times it is inside the field (1.5 um from its edges) and within +/-10 um of
focus, if that is at least half of the run (neurons that leave the field or the depth range count while they
are in it). At each time the method's neurons are matched one to one to the true ones in range within
1.5 um; a neuron's trace is the output of the method ID it was matched to most often, over its in-range
times; it "gets a trace" when matched at >= 90% of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from track.evaluate import match_points

__all__ = ["ActivityScorer", "MATCH_UM", "NeuronScores", "in_field", "summarise"]

MATCH_UM = 1.5
COVERAGE = 0.9  # a neuron "gets a trace" when it is matched at >= 90% of its in-range times
MIN_IN_RANGE = 0.5  # neurons in range for less of the run are not scored (too short for a trace r)


def in_field(positions_um: np.ndarray, field_um: tuple[float, float], *, margin_um: float = 1.5,
             max_depth_um: float = 10.0) -> np.ndarray:
    """(N,) True for neurons inside the (H, W) um field (margin from its edges) and the depth range."""
    p = np.asarray(positions_um, dtype=np.float64)
    lateral = np.all((p[:, 1:] >= margin_um) & (p[:, 1:] <= np.asarray(field_um) - margin_um), axis=1)
    return lateral & (np.abs(p[:, 0]) <= max_depth_um)


@dataclass
class _Series:
    """Per scored time: method id matched to each true neuron (-1 none), measured dF/F, position error."""

    times: list[float] = field(default_factory=list)
    matched: list[np.ndarray] = field(default_factory=list)
    activity: list[np.ndarray] = field(default_factory=list)
    outputs: list[dict[int, tuple[float, np.ndarray]]] = field(default_factory=list)  # id -> (dF/F, position)
    truth_positions: list[np.ndarray] = field(default_factory=list)
    scored: list[np.ndarray] = field(default_factory=list)


class ActivityScorer:
    """Accumulates, per method, the outputs at its own times with the truth at those times; then scores."""

    def __init__(self, field_um: tuple[float, float]) -> None:
        self.field_um = field_um
        self._series: dict[str, _Series] = {}

    def add(self, method: str, truth, ids: np.ndarray, positions_um: np.ndarray, dff: np.ndarray) -> None:
        """One output of ``method`` (ids, (M, 3) positions, dF/F) at the time of ``truth`` (a GroundTruth)."""
        s = self._series.setdefault(method, _Series())
        scored = in_field(truth.positions_um, self.field_um)
        r, c = match_points(positions_um, truth.positions_um[scored], MATCH_UM)
        matched = np.full(len(truth.ids), -1, np.int64)
        matched[np.flatnonzero(scored)[c]] = np.asarray(ids)[r]
        s.times.append(float(truth.t_s))
        s.matched.append(matched)
        s.activity.append(np.asarray(truth.activity, np.float64))
        s.truth_positions.append(np.asarray(truth.positions_um, np.float64))
        s.scored.append(scored)
        s.outputs.append(
            {
                int(i): (float(f), np.asarray(p, np.float64))
                for i, f, p in zip(ids, dff, positions_um, strict=True)
            }
        )

    @property
    def methods(self) -> list[str]:
        """Methods with at least one output."""
        return list(self._series)

    def neuron_scores(self, method: str) -> NeuronScores:
        """Per scored neuron: coverage, trace r (0 without a trace; flat-truth neurons left out), errors."""
        s = self._series[method]
        in_range = np.stack(s.scored, 1)  # in the field and depth range, per time
        scored = in_range.mean(axis=1) >= MIN_IN_RANGE
        in_range = in_range[scored]
        matched = np.stack(s.matched, 1)[scored]  # (N, T), -1 also wherever the neuron is out of range
        activity = np.stack(s.activity, 1)[scored]
        truth_pos = np.stack(s.truth_positions, 1)[scored]  # (N, T, 3)
        n, t = matched.shape
        duration = (s.times[-1] - s.times[0]) + (float(np.median(np.diff(s.times))) if t > 1 else 0.0)
        coverage = (matched >= 0).sum(axis=1) / np.maximum(in_range.sum(axis=1), 1) if t else np.zeros(n)
        share = float(in_range.mean()) if n and t else 1.0  # neuron-minutes count in-range times only
        out = NeuronScores(coverage=coverage, duration_s=duration * share, n_times=t)
        for i in range(n):
            seq = matched[i][matched[i] >= 0]
            out.switches += int(np.count_nonzero(seq[1:] != seq[:-1]))
            flat = np.std(activity[i, in_range[i]]) < 1e-6
            out.flat += int(flat)
            if len(seq) == 0:
                if not flat:
                    out.r.append(0.0)  # no trace: counts as no correlation
                    out.owners.append(-1)
                continue
            ids, counts = np.unique(seq, return_counts=True)
            owner = int(ids[np.argmax(counts)])
            present = [k for k in range(t) if in_range[i, k] and owner in s.outputs[k]]
            measured = np.array([s.outputs[k][owner][0] for k in present])
            where = np.array([s.outputs[k][owner][1] for k in present])
            out.errors.extend(np.linalg.norm(where - truth_pos[i, present], axis=1).tolist())
            if flat:
                continue
            ok = np.isfinite(measured)
            truth = activity[i, present][ok]
            if ok.sum() >= 3 and np.std(truth) < 1e-6:  # flat while its trace existed: no r to compute
                out.flat += 1
            elif ok.sum() < 3 or np.std(measured[ok]) < 1e-12:
                out.r.append(0.0)
                out.owners.append(owner)
            else:
                out.r.append(float(np.corrcoef(measured[ok], truth)[0, 1]))
                out.owners.append(owner)
        return out

    def score(self, method: str) -> dict[str, object]:
        """The method's summary scores (see ``summarise``)."""
        return summarise([self.neuron_scores(method)])


@dataclass
class NeuronScores:
    """Raw per-neuron scores of one method on one run (poolable over runs)."""

    coverage: np.ndarray
    duration_s: float  # the run's duration times the scored neurons' mean in-range share
    n_times: int
    r: list[float] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)
    switches: int = 0
    flat: int = 0
    owners: list[int] = field(default_factory=list)  # the method's id behind each r (-1: no trace)


def summarise(parts: list[NeuronScores]) -> dict[str, object]:
    """traced_fraction, median_r, fraction_r_ge_0_9, position_error_median_um, switches_per_neuron_minute
    (and counts), pooled over the neurons of one or more runs."""
    coverage = np.concatenate([p.coverage for p in parts]) if parts else np.zeros(0)
    r = np.asarray([v for p in parts for v in p.r])
    errors = [v for p in parts for v in p.errors]
    neuron_minutes = sum(len(p.coverage) * p.duration_s / 60.0 for p in parts)
    n = len(coverage)
    return {
        "traced_fraction": float(np.mean(coverage >= COVERAGE)) if n else float("nan"),
        "median_r": float(np.median(r)) if len(r) else float("nan"),
        "fraction_r_ge_0_9": float(np.mean(r >= 0.9)) if len(r) else float("nan"),
        "position_error_median_um": float(np.median(errors)) if errors else float("nan"),
        "switches_per_neuron_minute": float(sum(p.switches for p in parts) / max(1e-9, neuron_minutes)),
        "n_neurons_scored": int(n),
        "n_neurons_with_r": int(len(r)),
        "n_neurons_flat_activity": int(sum(p.flat for p in parts)),
        "n_times": [int(p.n_times) for p in parts],
        "mean_coverage": float(coverage.mean()) if n else float("nan"),
        "r_quantiles_10_25_50": [float(q) for q in np.quantile(r, [0.1, 0.25, 0.5])] if len(r) else [],
    }
