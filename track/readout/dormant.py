"""Neurons a re-scan did not find (most often: ones that moved out of the field), remembered with their
neighbours, so that they get their IDs back when a later scan finds them where the neighbours' motion puts
them.

A neuron out of the field has no pixels to follow it by, but its neighbours that stay in the field move with
it (the body bends smoothly over a few um), so its position is predicted by the lateral affine map that takes
those neighbours from where they were to where they are (ridge-held towards a plain shift, as the neuron lies
beyond them), and in depth by their median shift. On the re-entries of 60 s runs (seeds 11 / 13, true
positions), the median shift of six neighbours put the neuron 0.36 / 0.53 um off (15% / 4% beyond 2 um, where
it would get a new ID), the affine map 0.13 / 0.09 um (none beyond 2 um).
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
    group: int | None = None  # its size group (StampModel.groups) when last followed
    evidence: np.ndarray | None = None  # (G,) its size-group evidence then (Reference.group_evidence)
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

    @property
    def ids(self) -> np.ndarray:
        """The IDs remembered now."""
        return np.fromiter(self._items, np.int64, len(self._items))

    def add(
        self,
        ids: np.ndarray,
        positions_um: np.ndarray,
        found_ids: np.ndarray,
        found_um: np.ndarray,
        groups: np.ndarray | None = None,
        evidence: np.ndarray | None = None,
    ) -> None:
        """Remember neurons (ids, (M, 3) positions) that a scan missed, with their nearest neurons it found
        (found_ids, (F, 3) positions in that scan's coordinates) and, if any, their size groups (M,) and
        size-group evidence (M, G). A neuron remembered already (modelled meanwhile, without a scan finding
        it) keeps counting the scans it was missed by."""
        if len(found_ids) == 0:
            return
        found_ids = np.asarray(found_ids)
        positions_um = np.asarray(positions_um, np.float64)
        for k, (i, p) in enumerate(zip(np.asarray(ids).tolist(), positions_um, strict=True)):
            near = np.argsort(np.linalg.norm(found_um - p, axis=1))[: self.neighbours]
            self._items[int(i)] = _Dormant(
                p.copy(), found_ids[near].copy(), found_um[near].copy(),
                group=None if groups is None else int(groups[k]),
                evidence=None if evidence is None else np.array(evidence[k], np.float64),
                scans=self._items[int(i)].scans if int(i) in self._items else 0,
            )  # fmt: skip

    def groups_of(self, ids: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The size groups (M,) and evidence (M, G) remembered for these IDs; None where not remembered."""
        items = [self._items[int(i)] for i in np.asarray(ids).tolist()]
        groups = None if any(d.group is None for d in items) else np.array([d.group for d in items], np.int64)
        evidence = None
        if items and all(d.evidence is not None for d in items):
            evidence = np.stack([d.evidence for d in items])
        return groups, evidence

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
            ids.append(i)
            where.append(_carried(d.position_um, d.neighbour_um[list(then)], followed_um[list(now)]))
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


def _carried(
    position_um: np.ndarray, then_um: np.ndarray, now_um: np.ndarray, ridge_um2: float = 0.25
) -> np.ndarray:
    """(3,) position_um moved as its neighbours moved from then_um to now_um (K, 3): in depth by their median
    shift, laterally by their least-squares affine map, its linear part held towards none by ridge_um2 per
    neighbour (about the followed positions' error over a rotation's or strain's likely size, squared: 0.15 um
    over 0.3; with fewer than 3 neighbours, their median shift)."""
    moved = now_um - then_um
    out = position_um + np.median(moved, axis=0)
    if len(then_um) < 3:
        return out
    centre = then_um[:, 1:].mean(axis=0)
    design = np.column_stack([then_um[:, 1:] - centre, np.ones(len(then_um))])  # (K, 3)
    penalty = np.diag([ridge_um2 * len(then_um)] * 2 + [0.0])
    coef = np.linalg.solve(design.T @ design + penalty, design.T @ moved[:, 1:])  # (3, 2)
    out[1:] = position_um[1:] + np.append(position_um[1:] - centre, 1.0) @ coef
    return out
