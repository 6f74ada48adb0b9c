"""Neurons a re-scan did not find (most often: ones that moved out of the field), remembered with their
neighbours, so that they get their IDs back when a later scan finds them where the neighbours' motion puts
them.

A neuron out of the field has no pixels to follow it by, but its neighbours that stay in the field move with
it (the body is locally rigid over a few um), so its position is predicted as where it was last followed to
plus the median displacement of those neighbours since then.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["DormantNeurons"]


@dataclass
class _Dormant:
    position_um: np.ndarray  # (3,) where it was last followed to, in the coordinates of the scan missing it
    neighbour_ids: np.ndarray  # (K,)
    neighbour_um: np.ndarray  # (K, 3) the neighbours' positions in that scan
    scans: int = 0  # scans since it went dormant


class DormantNeurons:
    """IDs of neurons no longer followed, their last positions and their neighbours' positions then."""

    def __init__(self, neighbours: int = 6, remember_scans: int = 12) -> None:
        if neighbours < 1 or remember_scans < 1:
            raise ValueError("neighbours and remember_scans must be >= 1.")
        self.neighbours = neighbours
        self.remember_scans = remember_scans
        self._items: dict[int, _Dormant] = {}

    def __len__(self) -> int:
        return len(self._items)

    def add(
        self, ids: np.ndarray, positions_um: np.ndarray, found_ids: np.ndarray, found_um: np.ndarray
    ) -> None:
        """Remember neurons (ids, (M, 3) positions) that a scan missed, with their nearest neurons it found
        (found_ids, (F, 3) positions in that scan's coordinates)."""
        if len(found_ids) == 0:
            return
        found_ids = np.asarray(found_ids)
        for i, p in zip(np.asarray(ids).tolist(), np.asarray(positions_um, np.float64), strict=True):
            near = np.argsort(np.linalg.norm(found_um - p, axis=1))[: self.neighbours]
            self._items[int(i)] = _Dormant(p.copy(), found_ids[near].copy(), found_um[near].copy())

    def predict(self, followed_ids: np.ndarray, followed_um: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IDs and (M, 3) predicted positions now, from the neighbours still followed (at followed_um);
        neurons none of whose neighbours is followed any more cannot be placed and are left out."""
        row = {int(i): k for k, i in enumerate(np.asarray(followed_ids).tolist())}
        ids, where = [], []
        for i, d in self._items.items():
            rows = [(row[int(n)], k) for k, n in enumerate(d.neighbour_ids.tolist()) if int(n) in row]
            if not rows:
                continue
            now, then = zip(*rows, strict=True)
            moved = np.median(followed_um[list(now)] - d.neighbour_um[list(then)], axis=0)
            ids.append(i)
            where.append(d.position_um + moved)
        return np.asarray(ids, np.int64), np.asarray(where, np.float64).reshape(-1, 3)

    def take(self, ids: np.ndarray) -> None:
        """Forget these IDs: found again and followed."""
        for i in np.asarray(ids).tolist():
            self._items.pop(int(i), None)

    def age(self) -> np.ndarray:
        """One more scan passed: drop and return the IDs remembered for ``remember_scans`` scans."""
        expired = []
        for i, d in list(self._items.items()):
            d.scans += 1
            if d.scans >= self.remember_scans:
                expired.append(i)
                del self._items[i]
        return np.asarray(expired, np.int64)
