"""Each neuron's brightness scale carried across re-scans, so that a trace does not jump at every scan.

A new scan's model reads a defocused neuron a few percent brighter or dimmer than the last one did (measured:
5-10% at 2-6 um from focus). For some frames after a re-scan both models read the same frames; the median
ratio of a neuron's two readings links the new scale to the old one without the activity in between. Links
chained alone would drift over many scans, so each scan's log-scale error is also held to a prior (zero mean,
``scan_error``): a small Kalman filter per neuron, whose estimate divides the new model's brightness.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ScaleLinks"]


class ScaleLinks:
    """Per-neuron log-scale of the current model's brightness (mean, variance), updated from each link."""

    def __init__(self, scan_error: float, link_error: float) -> None:
        if scan_error <= 0 or link_error <= 0:
            raise ValueError("scan_error and link_error must be positive (log-scale standard deviations).")
        self.scan_error, self.link_error = scan_error, link_error
        self._before: dict[int, tuple[float, float]] = {}
        self._now: dict[int, tuple[float, float]] = {}
        self._ratios: dict[int, list[float]] = {}

    def new_scan(self) -> None:
        """A re-scan: the current estimates become the ones the next links start from."""
        self._before, self._now, self._ratios = self._now, {}, {}

    def observe(self, old_ids: np.ndarray, old: np.ndarray, ids: np.ndarray, new: np.ndarray) -> None:
        """One frame read by the previous model (old_ids, brightness) and the current one (ids, brightness)."""
        before = dict(zip(np.asarray(old_ids).tolist(), np.asarray(old, np.float64).tolist(), strict=True))
        prior = self.scan_error**2
        for i, b in zip(np.asarray(ids).tolist(), np.asarray(new, np.float64).tolist(), strict=True):
            a = before.get(i, 0.0)
            if a <= 0 or b <= 0:
                continue
            ratios = self._ratios.setdefault(i, [])
            ratios.append(a / b)
            mean, var = self._before.get(i, (0.0, prior))
            linked, linked_var = mean - float(np.log(np.median(ratios))), var + self.link_error**2
            precision = 1 / prior + 1 / linked_var
            self._now[i] = (linked / linked_var / precision, 1 / precision)

    def correction(self, ids: np.ndarray) -> np.ndarray:
        """(N,) factors that bring the current model's brightness to the linked scale (1 without a link)."""
        return np.exp([-self._now.get(i, (0.0, 0.0))[0] for i in np.asarray(ids).tolist()])
