"""The reference set from a calibration focal scan: detected neurons with stable IDs, 3D positions relative
to focus, and the defocus response fitted to the scan around them."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from track.detect import DetectConfig, Detections, detect_neurons, gaussian_blur, subvoxel_offsets
from track.evaluate import match_points
from track.readout.calibrate import StampFit, StampFitConfig, fit_stamps
from track.readout.patches import cut_patches
from track.readout.shapes import NeuronShapes, ShapeConfig, fit_shapes
from track.readout.stamps import Optics, StampModel

__all__ = ["Reference", "ResidualLook", "ScanMemory", "build_reference", "check_scan"]


@dataclass(frozen=True)
class Reference:
    """Neurons found in one scan (ids, (N, 3) um z/y/x with z relative to focus) and the fitted optics."""

    ids: np.ndarray
    positions_um: np.ndarray
    brightness: np.ndarray  # scan brightness in the stamps' units (ADU above background, in-focus stamp sum)
    stamps: StampModel
    pixel_size_um: float
    frame_shape: tuple[int, int]
    fit_residual: float  # relative squared error of the forward model on the scan
    shapes: NeuronShapes | None = None  # each neuron's own stamp near focus (None: the radial table alone)
    group_evidence: np.ndarray | None = None  # (N, G) evidence for each neuron's size group (stamps.groups)
    found: np.ndarray | None = None  # (N,) False for neurons added by prediction (with_neurons); None: all

    def __len__(self) -> int:
        return len(self.ids)

    def found_mask(self) -> np.ndarray:
        """(N,) True for the neurons the scan found, False for ones added by prediction."""
        return np.ones(len(self), bool) if self.found is None else self.found.copy()

    def without_corrections(self, mask: np.ndarray) -> Reference:
        """This reference with the own stamp corrections of the neurons in the (N,) boolean ``mask`` dropped:
        they are read with the shared tables alone."""
        mask = np.asarray(mask, bool)
        if self.shapes is None or not mask.any():
            return self
        values = self.shapes.values.copy()
        values[mask] = 0.0
        return replace(self, shapes=replace(self.shapes, values=values))

    def with_neurons(
        self,
        ids: np.ndarray,
        positions_um: np.ndarray,
        groups: np.ndarray | None = None,
        evidence: np.ndarray | None = None,
    ) -> Reference:
        """This reference with more neurons (ids, (M, 3) positions) that its scan did not find, e.g. ones
        remembered just outside the field or hidden behind a neighbour: read with the shared tables (their
        size ``groups``, or the first), without an own correction or a scan brightness; ``evidence`` (M, G)
        rows, else zeros. They are marked as not found by the scan (``found``)."""
        m = len(ids)
        if m == 0:
            return self
        stamps = self.stamps
        if stamps.groups is not None:
            extra = np.zeros(m, np.int64) if groups is None else np.asarray(groups, np.int64)
            stamps = replace(stamps, groups=np.concatenate([stamps.groups, extra]))
        shapes = self.shapes
        if shapes is not None:
            shapes = replace(
                shapes,
                values=np.concatenate([shapes.values, np.zeros((m, *shapes.values.shape[1:]), np.float32)]),
                d_start_um=np.concatenate([shapes.d_start_um, np.full(m, float(shapes.d_start_um.min()))]),
                frac_px=np.concatenate([shapes.frac_px, np.zeros((m, 2), shapes.frac_px.dtype)]),
            )
        group_evidence = self.group_evidence
        if group_evidence is not None:
            rows = np.zeros((m, group_evidence.shape[1])) if evidence is None else np.asarray(evidence)
            group_evidence = np.concatenate([group_evidence, rows])
        positions = np.asarray(positions_um, np.float64).reshape(m, 3)
        return replace(
            self,
            ids=np.concatenate([self.ids, np.asarray(ids, self.ids.dtype)]),
            positions_um=np.concatenate([self.positions_um, positions]),
            brightness=np.concatenate([self.brightness, np.zeros(m, self.brightness.dtype)]),
            stamps=stamps,
            shapes=shapes,
            group_evidence=group_evidence,
            found=np.concatenate([self.found_mask(), np.zeros(m, bool)]),
        )


@dataclass(frozen=True)
class ScanMemory:
    """What the neurons followed until a re-scan, at where they are now (N, 3) um, pass on to a new scan's
    neuron within match_um of one: its size-group evidence times ``memory``, so that a nucleus keeps its
    table from scan to scan unless the evidence turns (seed 17: 44% of the neurons changed group between two
    scans on their own, 20% and then 6% with it; each change rescales the neuron's trace), and its depth
    relative to the others, ``depth_memory`` of the way from the scan's (each scan's depths scatter by
    0.07-0.08 um from scan to scan, and a depth error rescales a defocused neuron's reading)."""

    positions_um: np.ndarray
    evidence: np.ndarray | None  # (N, G); None without size groups
    match_um: float
    memory: float = 0.8
    depth_memory: float = 0.0  # none unless asked (ReadoutConfig.depth_memory sets it for the live readout)
    # a relative depth that changed by more than this since the last scan changed (a specimen turns): the
    # new scan's stands
    depth_change_um: float = 0.5

    def for_neurons(self, positions_um: np.ndarray) -> np.ndarray | None:
        """(M, G) evidence the neurons at positions_um (M, 3) inherit, rows of 0 for neurons seen first; None
        without evidence."""
        if self.evidence is None:
            return None
        rows, cols = match_points(positions_um, self.positions_um, self.match_um)
        inherited = np.zeros((len(positions_um), self.evidence.shape[1]))
        inherited[rows] = self.memory * self.evidence[cols]
        return inherited

    def depths_for(self, positions_um: np.ndarray) -> np.ndarray:
        """(M,) depths of the neurons at positions_um (M, 3): a re-found neuron's moves ``depth_memory`` of
        the way to its followed depth, less the followed depths' common offset from this scan's (the scan
        sets where the specimen is; the memory only steadies where each neuron is relative to the others)."""
        depth = positions_um[:, 0].copy()
        rows, cols = match_points(positions_um, self.positions_um, self.match_um)
        if self.depth_memory <= 0 or len(rows) < 3:
            return depth
        deviation = self.positions_um[cols, 0] - depth[rows]
        deviation -= np.median(deviation)
        steady = np.abs(deviation) <= self.depth_change_um
        depth[rows[steady]] += self.depth_memory * deviation[steady]
        return depth


@dataclass(frozen=True)
class ResidualLook:
    """A second detection pass in the scan's residual once the stamps are fitted: neurons whose peak merged
    with a brighter neighbour's light in the first pass (crowded arrangements; the first pass found 73-87% of
    the neurons of two targettrack arrangements in the field and within 10 um of focus, 99% of simulated
    worms'). A residual peak is a neuron if its band-passed height is at least ``min_share`` of the first
    pass' median and it lies ``clear_um`` or more (3D) from every first-pass neuron: nearer, it is most
    often the residual of that neuron's model, offset by a position error (1.0-1.7 um away). Then the
    first-pass neurons beside a new one are moved to where their own light peaks (``reposition``)."""

    min_share: float = 0.3
    clear_um: float = 2.0
    # a first-pass neuron within this (3D) of a second-look one moves to the peak of its own light (the scan
    # less every other neuron's model) within search_um along z and a third of it across: a first-pass peak
    # between two nuclei, one of which the second look found, belongs to the other (targettrack ex2, 60 s:
    # switches 1.47 -> 0.67 per neuron-minute, r >= 0.9 0.41 -> 0.46; docs/activity-readout-log.md).
    # 0: no move
    reposition_um: float = 3.0
    search_um: float = 2.5

    def __post_init__(self) -> None:
        if not (0 < self.min_share and self.clear_um >= 0 and self.reposition_um >= 0 and self.search_um > 0):
            raise ValueError("ResidualLook needs min_share, search_um > 0 and clear_um, reposition_um >= 0.")

    def find(self, residual: torch.Tensor, z_um: np.ndarray, pixel_size_um: float, first: Detections,
             detect: DetectConfig | None) -> np.ndarray:
        """(M, 3) um positions of the neurons found in ``residual`` (K, H, W) at focus offsets ``z_um``
        (uniform steps) that ``first`` missed."""
        voxel = (float(z_um[1] - z_um[0]), pixel_size_um, pixel_size_um)
        peaks = detect_neurons(residual, voxel, config=detect, origin_um=(float(z_um[0]), 0.0, 0.0))
        if len(peaks) == 0 or len(first) == 0:
            return np.zeros((0, 3))
        strong = peaks.intensity >= self.min_share * float(np.median(first.intensity))
        gap = np.linalg.norm(peaks.positions_um[:, None] - first.positions_um[None], axis=2).min(axis=1)
        return peaks.positions_um[strong & (gap >= self.clear_um)]

    def reposition(self, z_um: np.ndarray, positions_um: np.ndarray, first: int, fitted: StampFit,
                   pixel_size_um: float) -> np.ndarray:
        """``positions_um`` (N, 3) with each of the ``first`` first-pass neurons within ``reposition_um`` of a
        later one moved to the peak of its own light in the fitted scan planes at focus offsets z_um[planes
        used] (the fit's residual plus its own model), smoothed over a nucleus' core, within the search box
        around where it was; not onto another neuron (within ``clear_um``)."""
        positions = positions_um.copy()
        gap = np.linalg.norm(positions_um[:first, None] - positions_um[None, first:], axis=2)
        near = np.flatnonzero(gap.min(axis=1, initial=np.inf) < self.reposition_um)
        if len(near) == 0 or fitted.residual is None:
            return positions
        residual = fitted.residual
        z = np.asarray(z_um, np.float64)[fitted.planes_used]
        dz = float(z[1] - z[0])
        shape = (int(residual.shape[1]), int(residual.shape[2]))
        reach_z = int(np.ceil(self.search_um / dz))
        reach_px = int(np.ceil(self.search_um / 3 / pixel_size_um))
        groups = None if fitted.stamps.groups is None else fitted.stamps.groups[near]
        stamps = replace(fitted.stamps, groups=groups)
        device = residual.device
        centres = torch.as_tensor(positions_um[near, 1:] / pixel_size_um, dtype=torch.float32, device=device)
        patches = cut_patches(centres, reach_px + 2, shape)
        brightness = torch.as_tensor(fitted.brightness[near], device=device)[:, None, None]
        own = residual.new_zeros((len(near), len(z), *patches.dy.shape[1:]))
        for k, plane in enumerate(residual):
            defocus = torch.as_tensor(positions_um[near, 0] - z[k], dtype=torch.float32, device=device)
            own[:, k] = patches.gather(plane) + brightness * stamps.evaluate(patches, defocus).value
        mid = patches.dy.shape[1] // 2
        centre_px = torch.stack([patches.dy[:, mid, mid], patches.dx[:, mid, mid]], 1).cpu().numpy()
        for row, n in enumerate(near.tolist()):
            core = gaussian_blur(own[row], (0.5 / dz, 0.5 / pixel_size_um, 0.5 / pixel_size_um))
            k0 = int(np.abs(z - positions_um[n, 0]).argmin())
            lo, hi = max(0, k0 - reach_z), min(len(z), k0 + reach_z + 1)
            box = core[lo:hi, mid - reach_px : mid + reach_px + 1, mid - reach_px : mid + reach_px + 1]
            peak = np.unravel_index(int(box.argmax()), tuple(box.shape))
            offset = np.array(peak, np.float64) - [k0 - lo, reach_px, reach_px]  # voxels from where it was
            offset += subvoxel_offsets(box, torch.as_tensor([peak], device=device))[0].double().cpu().numpy()
            lateral = positions_um[n, 1:] + (centre_px[row] + offset[1:]) * pixel_size_um
            there = np.array([z[k0] + offset[0] * dz, *lateral])
            if np.linalg.norm(there - positions_um[n]) < dz:
                continue  # its light peaks where the first pass put it (within a plane's step)
            others = np.delete(positions, n, axis=0)
            if np.linalg.norm(others - there, axis=1).min(initial=np.inf) >= self.clear_um:
                positions[n] = there
        return positions


def check_scan(stack: np.ndarray | torch.Tensor, z_um: np.ndarray) -> tuple[torch.Tensor, np.ndarray, float]:
    """The scan as a float32 (Z, H, W) tensor, its focus offsets and their uniform step; clear errors else."""
    z = np.asarray(z_um, dtype=np.float64).reshape(-1)
    tensor = stack if isinstance(stack, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(stack))
    if tensor.ndim != 3 or tensor.shape[0] != len(z):
        raise ValueError(
            "The calibration scan must be (Z, H, W) with one focus offset per plane; got "
            f"{tuple(tensor.shape)} and {len(z)} offsets."
        )
    if len(z) < 3:
        raise ValueError(f"The calibration scan needs at least 3 planes, got {len(z)}.")
    step = np.diff(z)
    if not (np.all(step > 0) and np.allclose(step, step[0], rtol=0.01, atol=1e-6)):
        raise ValueError(
            "Calibration scan offsets z_um must increase in equal steps (e.g. -12..12 um by 0.5)."
        )
    if not np.isfinite(z).all() or not bool(torch.isfinite(tensor.float().sum())):
        raise ValueError("The calibration scan or its offsets contain NaN or infinite values.")
    return tensor.float(), z, float(step[0])


def build_reference(
    stack: np.ndarray | torch.Tensor,
    z_um: np.ndarray,
    pixel_size_um: float,
    optics: Optics,
    *,
    detect: DetectConfig | None = None,
    fit: StampFitConfig | None = None,
    shapes: ShapeConfig | None = None,
    first_id: int = 0,
    device: str | torch.device = "cpu",
    earlier: ScanMemory | None = None,
    second_look: ResidualLook | None = None,
) -> Reference:
    """Detect the scan's neurons (ids first_id, first_id + 1, ...; with ``second_look``, also in the
    residual of a first fit), fit the defocus response around them (the radial tables by nucleus size, then
    each neuron's own correction near focus), with what the neurons followed since the ``earlier`` scan pass
    on (size-group evidence, steadier depths)."""
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be positive, got {pixel_size_um}.")
    tensor, z, dz = check_scan(stack, z_um)
    tensor = tensor.to(device)
    voxel = (dz, pixel_size_um, pixel_size_um)
    found = detect_neurons(tensor, voxel, config=detect, origin_um=(z[0], 0.0, 0.0))
    if len(found) == 0:
        raise ValueError(
            "No neurons were found in the calibration scan; check that the specimen is in the field and in "
            "the scan's range, and that the frames are not saturated or blank."
        )

    def fitted_at(detected: np.ndarray) -> tuple[np.ndarray, StampFit]:
        inherited = None if earlier is None else earlier.for_neurons(detected)
        at = detected if earlier is None else np.column_stack([earlier.depths_for(detected), detected[:, 1:]])
        return at, fit_stamps(tensor, z, at, pixel_size_um, optics, fit, group_evidence=inherited)

    positions, fitted = fitted_at(found.positions_um)
    if second_look is not None and fitted.residual is not None:
        missed = second_look.find(fitted.residual, z[fitted.planes_used], pixel_size_um, found, detect)
        if len(missed):
            detected = np.concatenate([found.positions_um, missed])
            positions, fitted = fitted_at(detected)
            moved = second_look.reposition(z, positions, len(found), fitted, pixel_size_um)
            rows = np.flatnonzero((moved != positions).any(axis=1))
            if len(rows):  # found anew where they were moved to: the fit starts from there
                detected[rows] = moved[rows]
                positions, fitted = fitted_at(detected)
    shape_cfg = shapes or ShapeConfig()
    own = (
        fit_shapes(tensor, z, positions, pixel_size_um, fitted.stamps, fitted.brightness, shape_cfg)
        if shape_cfg.iterations > 0
        else None
    )
    return Reference(
        ids=np.arange(first_id, first_id + len(positions), dtype=np.int64),
        positions_um=positions,
        brightness=fitted.brightness,
        stamps=fitted.stamps,
        pixel_size_um=float(pixel_size_um),
        frame_shape=(int(tensor.shape[1]), int(tensor.shape[2])),
        fit_residual=fitted.relative_residual,
        shapes=own,
        group_evidence=fitted.group_evidence,
    )
