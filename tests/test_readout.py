"""track.readout: demixing and motion on hand-made frames from known stamps, calibration and re-calibration
on the simulated microscope, bad input."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from acquire.sim import CameraConfig, SimConfig, WormSimulator
from track.evaluate import match_points
from track.readout import LiveReadout, Optics, ReadoutConfig, Reference
from track.readout.calibrate import StampFitConfig
from track.readout import demix
from track.readout.demix import gram_matrix
from track.readout.entering import Entering, EntryConfig
from track.readout.motion import DisplacementField, MotionConfig
from track.readout.patches import cut_patches
from track.readout.shapes import NeuronShapes
from track.readout.stamps import RadialGrid, StampModel, nominal_stamps

PX = 0.325
SHAPE = (96, 96)
BACKGROUND = 140.0


def _known_reference(n: int = 12, seed: int = 0) -> tuple[Reference, np.ndarray]:
    """A reference with a known stamp model and neurons at known positions; and their true brightness."""
    rng = np.random.default_rng(seed)
    stamps = nominal_stamps(Optics(), PX, 8.0)
    yx = rng.uniform(12, 84, (n, 2)) * PX
    z = rng.uniform(-5, 5, n)
    brightness = rng.uniform(5000, 40000, n)
    ref = Reference(
        ids=np.arange(100, 100 + n), positions_um=np.column_stack([z, yx]), brightness=brightness,
        stamps=stamps, pixel_size_um=PX, frame_shape=SHAPE, fit_residual=0.0,
    )  # fmt: skip
    return ref, brightness


def _render(ref: Reference, brightness: np.ndarray, shift_px=(0.0, 0.0), axial_um: float = 0.0) -> np.ndarray:
    """A noise-free frame: background plus each neuron's known stamp, moved by shift_px and axial_um."""
    centres = torch.as_tensor(ref.positions_um[:, 1:] / PX + np.asarray(shift_px), dtype=torch.float32)
    patches = cut_patches(centres, ref.stamps.half_px, SHAPE)
    depth = torch.as_tensor(ref.positions_um[:, 0] + axial_um, dtype=torch.float32)
    values = ref.stamps.evaluate(patches, depth).value
    frame = patches.render(torch.as_tensor(brightness, dtype=torch.float32)[:, None, None] * values)
    return (frame + BACKGROUND).double().numpy()


def test_demixing_recovers_known_brightness_exactly_without_noise():
    ref, brightness = _known_reference()
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    state = readout.update(_render(ref, brightness), 0.0)
    np.testing.assert_array_equal(state.ids, ref.ids)
    np.testing.assert_allclose(state.brightness, brightness, rtol=2e-3)
    assert abs(state.background - BACKGROUND) < 0.5
    np.testing.assert_allclose(state.positions_um, ref.positions_um, atol=0.01)


@pytest.mark.parametrize("overlap_chunk", [demix.OVERLAP_CHUNK, 1])
def test_patch_sums_match_the_frames_they_stand_for_also_across_the_fields_edge(monkeypatch, overlap_chunk):
    """Gather and render, the Gram matrix (scipy's on a CPU; the overlapping patches' on a GPU, in steps of
    ``overlap_chunk`` pixels: 1 is a pair a step) and the sums onto a stamp's radii are each what the same
    sums over whole frames give (the fast paths skip pixels outside the frame and whole-frame products)."""
    monkeypatch.setattr(demix, "OVERLAP_CHUNK", overlap_chunk)
    ref, _ = _known_reference(n=9, seed=3)
    centres = torch.as_tensor(ref.positions_um[:, 1:] / PX, dtype=torch.float32)
    centres[:3] = torch.tensor([[-4.3, 20.2], [50.6, 93.1], [95.5, 101.2]])  # partly or mostly outside
    patches = cut_patches(centres, ref.stamps.half_px, SHAPE)
    values = ref.stamps.evaluate(patches, torch.as_tensor(ref.positions_um[:, 0], dtype=torch.float32)).value
    one = torch.eye(len(values))[:, :, None, None]  # each stamp rendered alone into a whole frame
    alone = torch.stack([patches.render(values * one[k]) for k in range(len(values))]).double().flatten(1)
    frame = torch.rand(SHAPE, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gathered = patches.gather(frame)
    assert gathered[~patches.inside].abs().max() == 0
    torch.testing.assert_close((values.double() * gathered).sum(dim=(1, 2)), alone @ frame.reshape(-1))
    gram = gram_matrix(patches, values)
    torch.testing.assert_close(gram[:-1, :-1], alone @ alone.T)
    torch.testing.assert_close(demix.overlap_gram(patches, values), alone @ alone.T)
    torch.testing.assert_close(gram[:-1, -1], alone.sum(dim=1), rtol=1e-6, atol=1e-9)
    profile = torch.rand(len(values), 40, generator=torch.Generator().manual_seed(1))
    table = np.repeat(profile.numpy()[:, None], 2, axis=1)  # one table per neuron, alike at both defocus rows
    model = StampModel(np.array([0.0, 1.0]), 0.5, table, groups=np.arange(len(values)))
    grid = RadialGrid.of(patches, 0.5, 40)
    read = model.evaluate(patches, torch.zeros(len(values)), grid=grid).value
    torch.testing.assert_close(
        (grid.project(gathered) * profile.double()).sum(dim=1), (read.double() * gathered).sum(dim=(1, 2))
    )


def test_demixing_error_with_noise_is_bounded_by_its_own_estimate():
    ref, brightness = _known_reference(seed=1)
    clean = _render(ref, brightness)
    rng = np.random.default_rng(2)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    errors, z_scores = [], []
    for t in range(20):
        frame = clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean)  # shot-noise-like
        state = readout.update(frame, t * 0.01)
        errors.append(np.abs(state.brightness / brightness - 1))
        z_scores.append((state.brightness - brightness) / (state.brightness / state.confidence))
    assert np.median(errors) < 0.03
    assert np.std(z_scores) < 3.0  # the confidence (SNR) is an honest error estimate (within a factor 3)


def test_motion_estimate_follows_a_known_lateral_shift_and_axial_offset():
    ref, brightness = _known_reference(seed=3)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    shift = np.array([0.6, -0.4])
    state = readout.update(_render(ref, brightness, shift_px=shift, axial_um=0.3), 0.0)
    moved = (state.positions_um[:, 1:] - ref.positions_um[:, 1:]) / PX
    assert np.median(np.abs(moved - shift)) < 0.05
    assert abs(state.axial_offset_um - 0.3) < 0.1
    np.testing.assert_allclose(state.brightness, brightness, rtol=0.05)


def test_neurons_leaving_the_frame_keep_up_with_the_others():
    """The specimen drifts 4.4 px over 100 frames, across the frame's edge. Neurons at or beyond the edge have
    only part of their stamp (or none) in the frame. Their motion is weighed on those pixels alone, so they
    move on with the others (counting the pixels outside the frame as seen, those leaving it fell 0.19-0.37 px
    behind)."""
    ref, brightness = _known_reference(n=24, seed=5)
    positions = ref.positions_um.copy()
    positions[:8, 1] = np.array([20, 45, 30, 70, 25, 50, 35, 60]) * PX
    positions[:8, 2] = np.array([-3.0, -6.0, 98.0, 101.0, 1.0, 2.0, 94.0, 95.0]) * PX  # beyond, at the edges
    ref = dataclasses.replace(ref, positions_um=positions)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    for t in range(100):
        shift = np.array([0.02, 0.04]) * t  # px
        state = readout.update(_render(ref, brightness, shift_px=shift), t * 0.01)
    behind = np.linalg.norm((state.positions_um[:, 1:] - ref.positions_um[:, 1:]) / PX - shift, axis=1)
    assert behind[:8].max() < 0.16
    assert np.median(behind[8:]) < 0.03


def _scan(sim: WormSimulator, t0: float, z: np.ndarray) -> np.ndarray:
    return np.stack([sim.render(t0 + k / 100, float(zk)) for k, zk in enumerate(z)])


def test_calibration_finds_the_neurons_and_recalibration_keeps_their_ids():
    sim = WormSimulator(SimConfig(seed=2, camera=CameraConfig(shape=(80, 80))))
    z = np.arange(-10.0, 10.5, 1.0)
    readout = LiveReadout(ReadoutConfig(fit=StampFitConfig(iterations=6)))
    ref = readout.calibrate(_scan(sim, 0.0, z), z, PX, Optics())
    truth = sim.truth(0.1).positions_um
    field = np.all((truth[:, 1:] > 1.5) & (truth[:, 1:] < 80 * PX - 1.5), axis=1)
    found, _ = match_points(ref.positions_um, truth[field], 1.5)
    real, _ = match_points(ref.positions_um, truth, 1.5)  # neurons just outside the field are found too
    assert len(found) >= 0.9 * field.sum() and len(real) >= 0.9 * len(ref)
    for k in range(5):
        readout.update(sim.render(0.5 + k / 100, 0.0), 0.5 + k / 100)
    again = readout.recalibrate(_scan(sim, 1.0, z), z)
    old_rows, old_truth = match_points(ref.positions_um, truth, 1.5)
    new_rows, new_truth = match_points(again.positions_um, sim.truth(1.1).positions_um, 1.5)
    old_id = dict(zip(old_truth.tolist(), ref.ids[old_rows].tolist(), strict=True))
    pairs = [(old_id[n], i) for n, i in zip(new_truth.tolist(), again.ids[new_rows].tolist(), strict=True)
             if n in old_id]  # fmt: skip
    assert len(pairs) >= 0.8 * len(ref)
    assert np.mean([a == b for a, b in pairs]) >= 0.95  # the same neuron keeps its ID
    new = np.setdiff1d(again.ids, ref.ids)
    assert len(new) == 0 or new.min() > ref.ids.max()  # new neurons never reuse an ID


def test_a_rescan_is_moved_to_the_scans_end_at_the_velocity_followed_before_it():
    """A focal scan finds each neuron when it passes its depth; the neurons moved on until the scan's end at
    the velocity followed just before it, and a re-scan's positions are moved on by that much."""
    ref, brightness = _known_reference(seed=2)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    assert readout.velocity_um_s() is None
    v_px_s = np.array([1.0, -0.5])
    for k in range(21):
        readout.update(_render(ref, brightness, shift_px=v_px_s * k / 100), k / 100)
    velocity = readout.velocity_um_s()
    # following lags a steady motion a little
    np.testing.assert_allclose(velocity, np.broadcast_to(v_px_s * PX, velocity.shape), rtol=0.3)
    z = np.arange(-6.0, 6.5, 0.5)
    moved = readout._deskewed(ref, z, plane_period_s=0.01)
    plane = np.abs(ref.positions_um[:, :1] - z).argmin(axis=1)
    expected = (len(z) - plane - 0.5)[:, None] * 0.01 * v_px_s * PX
    np.testing.assert_allclose(moved.positions_um[:, 1:] - ref.positions_um[:, 1:], expected, rtol=0.2)
    np.testing.assert_array_equal(moved.positions_um[:, 0], ref.positions_um[:, 0])


def test_bad_input_gives_one_clear_error():
    readout = LiveReadout()
    with pytest.raises(RuntimeError, match="calibrate"):
        readout.update(np.zeros(SHAPE, np.uint16), 0.0)
    with pytest.raises(ValueError, match="equal steps"):
        readout.calibrate(np.zeros((3, *SHAPE), np.uint16), np.array([0.0, 1.0, 3.0]), PX, Optics())
    with pytest.raises(ValueError, match="one focus offset per plane"):
        readout.calibrate(np.zeros((4, *SHAPE), np.uint16), np.array([0.0, 1.0, 2.0]), PX, Optics())
    with pytest.raises(ValueError, match="No neurons"):
        readout.calibrate(np.full((5, *SHAPE), 100, np.uint16), np.arange(5.0), PX, Optics())
    ref, brightness = _known_reference()
    readout.follow(ref)
    with pytest.raises(ValueError, match="Frame shape"):
        readout.update(np.zeros((64, 64), np.uint16), 0.0)


def _elongation(n: int, dy: np.ndarray, dx: np.ndarray, defocus: float) -> np.ndarray:
    """A hand-made shape of neuron n (per unit brightness): elongated along one axis near focus, fading with
    |defocus| (a nucleus of its own shape, not the shared radial stamp)."""
    amplitude = (1.5e-3 if n % 2 else -1.5e-3) * max(0.0, 1 - abs(defocus) / 5)
    return amplitude * (dy**2 - dx**2) / 9 * np.exp(-(dy**2 + dx**2) / 18)


def test_per_neuron_stamps_recover_a_known_shape_from_a_hand_made_scan():
    from track.readout.shapes import ShapeConfig, ShapeReader, fit_shapes

    stamps = nominal_stamps(Optics(), PX, 10.0)
    rng = np.random.default_rng(4)
    n, shape = 5, (64, 64)
    yx = np.array([[16, 16], [16, 44], [44, 20], [46, 46], [30, 31]]) + rng.uniform(-0.5, 0.5, (n, 2))
    depth = np.array([-2.0, 1.3, 0.4, 2.6, -0.7])
    brightness = rng.uniform(10000, 30000, n)
    z = np.arange(-8.0, 8.25, 0.5)
    centres = torch.as_tensor(yx, dtype=torch.float32)
    patches = cut_patches(centres, stamps.half_for(10.0), shape)
    dy, dx = patches.dy.numpy(), patches.dx.numpy()
    scan = []
    for zk in z:
        values = stamps.evaluate(patches, torch.as_tensor(depth - zk, dtype=torch.float32)).value.numpy()
        values = values + np.stack([_elongation(i, dy[i], dx[i], depth[i] - zk) for i in range(n)])
        scan.append(patches.render(torch.as_tensor(brightness[:, None, None] * values)).numpy() + BACKGROUND)
    positions = np.column_stack([depth, yx * PX])
    cfg = ShapeConfig(max_defocus_um=4.0, half_px=8, iterations=6)
    fitted = fit_shapes(torch.as_tensor(np.stack(scan)), z, positions, PX, stamps, brightness, cfg)
    reader = ShapeReader(fitted, torch.device("cpu"))
    small = cut_patches(centres, 8, shape)
    for defocus in (0.0, 1.0, -2.0):
        d = torch.full((n,), defocus)
        radial = stamps.evaluate(small, d)
        base = radial.value.clone()
        got = (reader.add_to(radial, small, d).value - base).numpy()
        want = np.stack([_elongation(i, small.dy[i].numpy(), small.dx[i].numpy(), defocus) for i in range(n)])
        for i in range(n):
            assert np.corrcoef(got[i].ravel(), want[i].ravel())[0, 1] > 0.9
            assert np.abs(got[i] - want[i]).max() < 0.25 * np.abs(want[i]).max()


def test_motion_field_holds_neurons_with_little_information_to_their_neighbours():
    """A smooth deformation (shift growing along x) in noisy frames where every 4th neuron is very dim: the
    dim ones, whose own position information is weak, move with their neighbours instead of wandering (without
    the field: median 0.13 px, worst 0.25 px off)."""
    ref, brightness = _known_reference(n=16, seed=7)
    ref = dataclasses.replace(ref, positions_um=ref.positions_um * np.array([0.0, 1, 1]))  # all at focus
    lit = brightness.copy()
    lit[::4] *= 0.02
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    x = ref.positions_um[:, 2] / PX
    shift = np.column_stack([0.4 + 0.01 * (x - 48), np.full(len(x), -0.3)])  # px, smooth in x
    rng = np.random.default_rng(0)
    errors = []
    for t in range(40):
        clean = _render_field(ref, lit, shift * min(1.0, t / 10))
        readout.update(clean + rng.normal(0, 1, clean.shape) * np.sqrt(clean), t * 0.01)
        if t >= 20:
            moved = (readout.positions_um()[:, 1:] - ref.positions_um[:, 1:]) / PX
            errors.append(np.linalg.norm(moved - shift, axis=1))
    error = np.mean(errors, axis=0)
    assert np.median(error[1::4]) < 0.05  # bright neurons: their own information
    assert np.median(error[::4]) < 0.08 and error[::4].max() < 0.12  # dim ones: held by the field


def _bending(positions_um: torch.Tensor) -> torch.Tensor:
    """(N, 2) px lateral displacements of a bending, turning, translating body (smooth over tens of um)."""
    y, x = positions_um[:, 1], positions_um[:, 2]
    rows = 1.0 + 2.0 * torch.sin(2 * np.pi * x / 120) + 0.03 * y
    cols = -2.0 + 0.04 * y - 0.02 * x
    return torch.stack([rows, cols], 1).double()


def test_the_displacement_field_predicts_a_bending_body_from_the_other_neurons():
    """Each neuron's displacement as all the others' (noisy) ones predict it, over a 60 um field of a bending
    body: far closer than their plain mean within 4 um (the bend's curvature), and a neuron far from every
    other is not pulled (certainty 0) while one among many is (certainty near 1)."""
    rng = np.random.default_rng(3)
    positions = torch.as_tensor(rng.uniform(0, 1, (120, 3)) * np.array([4.0, 60, 60]))
    positions[0] = torch.tensor([0.0, 500.0, 500.0])  # far from every other
    field = DisplacementField.from_positions(positions, MotionConfig(), PX)
    truth = _bending(positions)
    noisy = truth + torch.as_tensor(rng.normal(0, 0.02, truth.shape))
    trust = torch.ones(120, dtype=torch.float64)
    predicted, certainty = field.predict(trust, noisy)
    error = (predicted - truth)[1:].norm(dim=1)
    near = torch.exp(-0.5 * torch.cdist(positions[1:, 1:], positions[1:, 1:]) ** 2 / 4.0**2)
    near.fill_diagonal_(0.0)
    mean = ((near / near.sum(dim=1, keepdim=True)) @ noisy[1:] - truth[1:]).norm(dim=1)
    assert float(error.median()) < 0.03 and float(error.median()) < 0.5 * float(mean.median())
    assert float(certainty[0]) < 1e-6 and float(certainty[1:].median()) > 0.9


def test_the_displacement_field_ignores_what_neurons_without_information_say():
    """A neuron with almost no lateral information (a dim or far defocused one) that wandered 5 px off does
    not move the others' predictions, and its own comes from the field alone: the lateral one, whatever its
    depth (4 um below a slab of neighbours near focus)."""
    rng = np.random.default_rng(5)
    positions = torch.as_tensor(rng.uniform(0, 1, (80, 3)) * np.array([0.5, 40, 40]))
    positions[0] = torch.tensor([4.0, 20.0, 20.0])
    field = DisplacementField.from_positions(positions, MotionConfig(), PX)
    truth = _bending(positions)
    noisy = truth + torch.as_tensor(rng.normal(0, 0.02, truth.shape))
    trust = torch.ones(80, dtype=torch.float64)
    trust[0] = 1e-6
    honest, _ = field.predict(trust, noisy)
    wandered = noisy.clone()
    wandered[0] += torch.tensor([5.0, -5.0], dtype=torch.float64)
    predicted, certainty = field.predict(trust, wandered)
    assert float((predicted[1:] - honest[1:]).abs().max()) < 1e-3
    assert float((predicted[0] - truth[0]).norm()) < 0.03 and float(certainty[0]) > 0.9


def _render_field(ref: Reference, brightness: np.ndarray, shift_px: np.ndarray) -> np.ndarray:
    """A noise-free frame with each neuron moved by its own (N, 2) shift."""
    centres = torch.as_tensor(ref.positions_um[:, 1:] / PX + shift_px, dtype=torch.float32)
    patches = cut_patches(centres, ref.stamps.half_px, SHAPE)
    values = ref.stamps.evaluate(patches, torch.as_tensor(ref.positions_um[:, 0], dtype=torch.float32)).value
    return (patches.render(torch.as_tensor(brightness, dtype=torch.float32)[:, None, None] * values)
            + BACKGROUND).double().numpy()  # fmt: skip


def test_a_new_reference_keeps_the_ids_of_the_neurons_followed_and_numbers_the_new_ones_after_them():
    ref, brightness = _known_reference(seed=4)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    shift_px = np.array([0.8, -0.6])
    for t in range(3):  # the specimen moved since the scan: the readout follows it
        readout.update(_render(ref, brightness, shift_px=shift_px), t * 0.01)
    moved = ref.positions_um + np.r_[0.0, shift_px * PX]
    # a neuron the first scan did not find; the last one is not found again
    extra = np.array([[1.0, 5.0, 5.0]])
    fresh = dataclasses.replace(
        ref, ids=np.arange(500, 500 + len(ref.ids)), positions_um=np.vstack([moved[:-1], extra]),
        brightness=np.r_[brightness[:-1], 9000.0],
    )  # fmt: skip
    again = readout.carry_over(fresh)
    np.testing.assert_array_equal(again.ids[:-1], ref.ids[:-1])  # the neurons found again keep their IDs
    assert again.ids[-1] > ref.ids.max()  # a new neuron never reuses an ID
    assert again.found_mask().all()  # the one missed, in the open (no neuron found above or below): dropped
    state = readout.update(_render(ref, brightness, shift_px=shift_px), 0.03)
    np.testing.assert_array_equal(state.ids, again.ids)


def _radial_scan(truth, depth: np.ndarray, z: np.ndarray, seed: int):
    """A hand-made (Z, H, W) scan of neurons at ``depth`` (random lateral positions and brightness) imaged
    with ``truth``'s stamps: the scan, the (N, 3) positions in um and the brightness."""
    rng = np.random.default_rng(seed)
    yx = rng.uniform(14, 82, (len(depth), 2))
    brightness = rng.uniform(10000, 30000, len(depth))
    patches = cut_patches(torch.as_tensor(yx, dtype=torch.float32), truth.half_px, SHAPE)
    scan = torch.as_tensor(np.stack([
        patches.render(torch.as_tensor(brightness[:, None, None]) * truth.evaluate(
            patches, torch.as_tensor(depth - zk, dtype=torch.float32)).value).numpy() + BACKGROUND
        for zk in z
    ]))  # fmt: skip
    return scan, np.column_stack([depth, yx * PX]), brightness


def test_the_fitted_defocus_table_keeps_every_neurons_light_at_every_defocus():
    from track.readout.calibrate import fit_stamps
    from track.readout.stamps import ring_areas

    truth = nominal_stamps(Optics(nucleus_diameter_um=3.0), PX, 10.0)  # wider nuclei than the fit starts from
    z = np.arange(-9.0, 9.25, 0.5)
    scan, positions, brightness = _radial_scan(truth, np.random.default_rng(5).uniform(-3, 3, 10), z, seed=5)
    fit = fit_stamps(scan, z, positions, PX, Optics())
    flux = fit.stamps.table @ ring_areas(fit.stamps.table.shape[-1], fit.stamps.radius_step_px)
    np.testing.assert_allclose(flux, 1.0, rtol=1e-4)  # a wide-field camera sees all the light at any focus
    np.testing.assert_allclose(fit.brightness, brightness, rtol=0.06)


def test_the_fit_is_the_same_whatever_number_of_scan_planes_it_works_on_at_once():
    """A GPU fits every plane at once, a CPU one at a time: the same sums in another order. 37 planes in
    steps of 1, 4 (the last step holds 1) and all 37 give one fit."""
    from track.readout.calibrate import fit_stamps

    truth = nominal_stamps(Optics(nucleus_diameter_um=3.0), PX, 10.0)
    z = np.arange(-9.0, 9.25, 0.5)
    scan, positions, _ = _radial_scan(truth, np.random.default_rng(7).uniform(-3, 3, 10), z, seed=7)
    fits = [fit_stamps(scan, z, positions, PX, Optics(), StampFitConfig(planes_per_step=k)) for k in (1, 4, 37)]
    for fit in fits[1:]:
        np.testing.assert_allclose(fit.stamps.table, fits[0].stamps.table, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(fit.brightness, fits[0].brightness, rtol=1e-4)
        np.testing.assert_array_equal(fit.stamps.groups, fits[0].stamps.groups)
        assert fit.relative_residual == pytest.approx(fits[0].relative_residual, rel=1e-4)


def test_a_specimen_deeper_than_the_tables_range_is_still_calibrated():
    """Neurons 20 um apart in depth leave no scan plane that sees them all within the table's 10 um: the fit
    works on the planes that see all but the deepest and shallowest (held to all of them, it refuses)."""
    from track.readout.calibrate import fit_stamps

    truth = nominal_stamps(Optics(), PX, 14.0)
    depth = np.linspace(-11.0, 9.0, 12)
    z = np.arange(-12.0, 12.25, 0.5)
    scan, positions, brightness = _radial_scan(truth, depth, z, seed=6)
    with pytest.raises(ValueError, match="scan at least 3 planes"):
        fit_stamps(scan, z, positions, PX, Optics(), StampFitConfig(out_of_range_share=0.0))
    fit = fit_stamps(scan, z, positions, PX, Optics())
    assert len(fit.planes_used) >= 5
    # the planes used see the middle neurons up to 5 um from their focus (within a quarter), the extremes
    # only 9-10 um from it
    central = np.abs(depth - np.median(depth)) <= 5.0
    np.testing.assert_allclose(fit.brightness[central], brightness[central], rtol=0.25)


def test_a_rescan_steadies_each_neurons_depth_relative_to_the_others_but_not_where_the_specimen_is():
    from track.readout.reference import ScanMemory

    rng = np.random.default_rng(3)
    found = np.column_stack([rng.uniform(-6, 6, 20), rng.uniform(5, 25, (20, 2))])
    jitter = rng.normal(0, 0.1, 20)
    followed = found + np.column_stack([0.7 + jitter, np.full((20, 2), 0.3)])  # the specimen moved 0.7 um
    followed[0, 0] += 1.0  # this neuron's depth really changed (the specimen turned): the scan's stands
    followed[1, 1:] += 50.0  # followed out of reach: a neuron the scan finds first
    depth = ScanMemory(followed, None, match_um=2.0, depth_memory=0.5).depths_for(found)
    steady = np.arange(2, 20)
    common = np.median(followed[[0, *steady], 0] - found[[0, *steady], 0])
    expected = found[steady, 0] + 0.5 * (followed[steady, 0] - common - found[steady, 0])
    np.testing.assert_allclose(depth[steady], expected)
    np.testing.assert_allclose(depth[:2], found[:2, 0])
    assert abs(np.median(depth - found[:, 0])) < 0.02  # the scan, not the followed offset, says where it is
    off = ScanMemory(followed, None, match_um=2.0, depth_memory=0.0).depths_for(found)
    np.testing.assert_array_equal(off, found[:, 0])


def test_a_neuron_out_of_the_field_is_carried_along_as_its_neighbours_turn():
    from track.readout.dormant import DormantNeurons

    rng = np.random.default_rng(8)
    found = np.column_stack([rng.uniform(-2, 2, 6), rng.uniform(10, 16, (6, 2))])
    lost = np.array([0.5, 13.0, 19.0])  # 5-6 um beyond its neighbours, out of the field
    angle = np.deg2rad(20.0)  # the body turned about the neighbours' centre and moved on
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])

    def moved(p: np.ndarray) -> np.ndarray:
        return np.column_stack([p[..., :1] + 0.4, (p[..., 1:] - 13.0) @ turn.T + 13.0 + [1.0, -2.0]])

    dormant = DormantNeurons(neighbours=6)
    dormant.add(np.array([3]), lost[None], np.arange(10, 16), found)
    ids, where = dormant.predict(np.arange(10, 16), moved(found))
    truth = moved(lost[None])[0]
    error = np.linalg.norm(where[0] - truth)
    shift_only = np.linalg.norm(lost + np.median(moved(found) - found, axis=0) - truth)
    assert ids.tolist() == [3] and error < 0.8 and shift_only > 2.0  # a plain shift loses it (2 um match)


def test_a_neuron_that_leaves_the_field_gets_its_id_back_where_its_neighbours_motion_puts_it():
    from track.readout.dormant import DormantNeurons

    rng = np.random.default_rng(6)
    found = rng.uniform(0, 20, (8, 3))
    dormant = DormantNeurons(neighbours=4, remember_scans=2)
    dormant.add(np.array([7]), np.array([[1.0, 2.0, 3.0]]), np.arange(100, 108), found)
    moved = found + np.array([0.0, 2.0, -1.0])  # the body moved on; its nearest neighbour left the field too
    still = np.argsort(np.linalg.norm(found - [1.0, 2.0, 3.0], axis=1))[1:]
    ids, where = dormant.predict(100 + still, moved[still])
    assert ids.tolist() == [7]
    np.testing.assert_allclose(where[0], [1.0, 4.0, 2.0])
    assert dormant.predict(np.array([200]), np.zeros((1, 3)))[0].size == 0  # no neighbour followed: no place
    assert dormant.age().tolist() == [] and dormant.age().tolist() == [7] and len(dormant) == 0  # forgotten

    ref, brightness = _known_reference(seed=4)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    gone = dataclasses.replace(ref, ids=np.arange(500, 511), positions_um=ref.positions_um[:-1],
                               brightness=brightness[:-1])  # fmt: skip
    first = readout.carry_over(gone)  # the scan missed the last neuron (no neuron hides it: not held)
    assert ref.ids[-1] not in first.ids
    step = np.array([0.3, 1.2, -0.9])  # found again, and the worm moved meanwhile
    back = dataclasses.replace(ref, ids=np.arange(600, 612), positions_um=ref.positions_um + step)
    again = readout.carry_over(back)
    np.testing.assert_array_equal(again.ids, ref.ids)  # every neuron has its own ID again


def test_a_remembered_neuron_beyond_the_fields_edge_stays_modelled_while_its_light_reaches_in():
    """A re-scan cannot find a neuron whose centre lies beyond the field's edge, though its defocused light
    still falls on its in-field neighbours. Kept in the model where its neighbours put it (with its ID), it
    leaves their brightness exact; dropped, its light is read as theirs. One far beyond reach is not kept."""
    ref, brightness = _known_reference(n=12, seed=7)
    positions = ref.positions_um.copy()
    positions[-2] = [4.0, 48 * PX, -3 * PX]  # 3 px beyond the left edge, 4 um from focus
    positions[-1] = [4.0, 30 * PX, -60 * PX]  # far beyond: no light in the field
    positions[0] = [4.0, 50 * PX, 5 * PX]  # an in-field neighbour the edge neuron's light falls on
    ref = dataclasses.replace(ref, positions_um=positions)
    frame = _render(ref, brightness)
    read = {}
    for keep in (True, False):
        readout = LiveReadout(ReadoutConfig(edge_neurons=keep))
        readout.follow(ref)
        readout.update(frame, 0.0)
        rescan = dataclasses.replace(
            ref, ids=np.arange(500, 510), positions_um=positions[:-2], brightness=brightness[:-2]
        )  # the scan misses both
        again = readout.carry_over(rescan)
        assert ref.ids[-1] not in again.ids
        assert (ref.ids[-2] in again.ids) == keep
        assert again.found_mask().tolist() == [True] * 10 + [False] * keep  # placed, not found
        read[keep] = readout.update(frame, 0.01)
    kept = read[True]
    np.testing.assert_allclose(kept.positions_um[-1], positions[-2], atol=0.05)
    np.testing.assert_allclose(kept.brightness[:10], brightness[:10], rtol=0.01)
    assert read[False].brightness[0] > 1.05 * brightness[0]


def test_a_neuron_a_rescan_missed_behind_a_neighbour_stays_modelled_and_expires_if_never_found():
    """A scan can miss a neuron 3 um below another, laterally 1 um apart. Kept in the model where its
    neighbours put it, the neighbour above reads its own brightness; dropped, it reads both neurons' light.
    A neuron no scan finds again is held for ``remember_scans`` scans only."""
    ref, brightness = _known_reference(n=12, seed=7)
    positions = ref.positions_um.copy()
    positions[-1] = positions[0] + [3.0, 1.0 * 0.6, 1.0 * 0.8]  # hidden below neuron 0 in the scan
    ref = dataclasses.replace(ref, positions_um=positions)
    frame = _render(ref, brightness)
    rescan = dataclasses.replace(ref, ids=np.arange(500, 511), positions_um=positions[:-1],
                                 brightness=brightness[:-1])  # fmt: skip
    read = {}
    for hidden in (True, False):
        readout = LiveReadout(ReadoutConfig(hidden_neurons=hidden, remember_scans=3))
        readout.follow(ref)
        readout.update(frame, 0.0)
        again = readout.carry_over(rescan)
        assert (ref.ids[-1] in again.ids) == hidden
        read[hidden] = readout.update(frame, 0.01)
        if hidden:
            np.testing.assert_allclose(read[hidden].positions_um[-1], positions[-1], atol=0.05)
            held = [ref.ids[-1] in readout.carry_over(rescan).ids for _ in range(3)]
            assert held == [True, True, False]  # missed by three more scans in all: forgotten
    np.testing.assert_allclose(read[True].brightness[:11], brightness[:11], rtol=0.01)
    assert read[False].brightness[0] > 1.1 * brightness[0]
    # the scan's residual around its neighbours held the hidden one's light: their own corrections go
    shapes = NeuronShapes(
        values=np.full((11, 3, 5, 5), 1e-4, np.float32), d_start_um=positions[:-1, 0] - 1.0, d_step_um=1.0,
        frac_px=np.zeros((11, 2)), max_defocus_um=4.0, taper_um=1.0,
    )  # fmt: skip
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    again = readout.carry_over(dataclasses.replace(rescan, shapes=shapes))
    own = np.abs(again.shapes.values).sum(axis=(1, 2, 3))
    # neurons 0 and 9 lie 1.0 and 1.5 um from it laterally (within match_um), 3.0 and 1.4 um above it
    assert np.flatnonzero(own == 0).tolist() == [0, 9, 11]  # and the kept neuron has none either


def test_a_neuron_placed_by_prediction_does_not_drag_the_others_motion():
    """A neuron added where its neighbours' motion predicts it (not found by the scan) may sit off its true
    depth. Its residual must not move the shared axial offset, nor, through the motion field, the others
    (a still, noise-free frame: any motion is an error)."""
    ref, brightness = _known_reference(n=14, seed=9)
    positions = ref.positions_um.copy()
    positions[-1] = [3.0, 48 * PX, 2 * PX]  # at the left edge
    truth = dataclasses.replace(ref, positions_um=positions)
    frame = _render(truth, brightness)
    found = dataclasses.replace(
        truth, ids=truth.ids[:-1], positions_um=positions[:-1], brightness=brightness[:-1]
    )
    placed = found.with_neurons(truth.ids[-1:], positions[-1:] + [[1.0, 0.0, 0.0]])  # 1 um too deep
    moved = {}
    for informs in (False, True):
        readout = LiveReadout(ReadoutConfig())
        readout.follow(placed if not informs else dataclasses.replace(placed, found=None))
        state = readout.update(frame, 0.0)
        lateral = np.abs(state.positions_um[:-1, 1:] - positions[:-1, 1:]).max()
        moved[informs] = (lateral, state.axial_offset_um)
    assert abs(moved[False][1]) < 0.01 < 0.02 < abs(moved[True][1])  # informing, it drags the axial offset
    assert moved[False][0] < 0.8 * moved[True][0]  # and, through the field, the others


def test_a_neuron_with_only_its_tail_in_the_frame_is_not_read():
    """With under ``min_visible`` of its light in the frame, a neuron's brightness would come from a few noisy
    tail pixels (many times its true value); it reads 0 and its neighbours are read as before."""
    ref, brightness = _known_reference(n=12, seed=8)
    positions = ref.positions_um.copy()
    positions[-1] = [0.5, 48 * PX, -9 * PX]  # 9 px beyond the left edge, near focus: 0.2% of its light in
    ref = dataclasses.replace(ref, positions_um=positions)
    frame = _render(ref, brightness) + np.random.default_rng(1).normal(0, 3.0, SHAPE)
    loose = LiveReadout(ReadoutConfig(min_visible=0.0))
    loose.follow(ref)
    careful = LiveReadout(ReadoutConfig())
    careful.follow(ref)
    wild = loose.update(frame, 0.0).brightness[-1]
    state = careful.update(frame, 0.0)
    assert state.brightness[-1] == 0 and state.confidence[-1] == 0 and np.isnan(state.dff[-1])
    assert np.isfinite(state.dff[:-1]).all()  # the others are read
    assert abs(wild - brightness[-1]) > 0.2 * brightness[-1]  # what it would read from its tail
    np.testing.assert_allclose(state.brightness[:-1], brightness[:-1], rtol=0.02)


def test_a_neuron_entering_the_field_between_scans_joins_the_model_and_frees_its_neighbour():
    """A neuron no scan has seen comes in across the edge: averaged over ``entering.every`` frames, the
    residual shows it where no modelled neuron is. Added at the depth whose stamp fits it, it is read and
    followed under a new ID, and its in-field neighbour reads its own brightness again; without the search
    that neighbour reads the newcomer's light too. A bright neuron in mid-field that the model lacks is not
    taken (only the edge's band is searched)."""
    ref, brightness = _known_reference(n=12, seed=10)
    positions = ref.positions_um.copy()
    positions[0] = [1.0, 48 * PX, 82 * PX]  # the in-field neighbour, 8 px from the newcomer
    positions[-2] = [0.5, 40 * PX, 40 * PX]  # the model's mid-field omission
    positions[-1] = [-1.5, 46 * PX, 90 * PX]  # entering, 5 px inside the right edge
    truth = dataclasses.replace(ref, positions_um=positions)
    clean = _render(truth, brightness)
    known = dataclasses.replace(
        truth, ids=truth.ids[:-2], positions_um=positions[:-2], brightness=brightness[:-2]
    )
    rng = np.random.default_rng(3)
    read, readouts = {}, {}
    for every in (10, 0):
        readouts[every] = LiveReadout(ReadoutConfig(entering=EntryConfig(every=every)))
        readouts[every].follow(known)
        noisy = [clean + rng.normal(0, 1, SHAPE) * np.sqrt(clean) for _ in range(60)]
        states = [readouts[every].update(frame, t * 0.01) for t, frame in enumerate(noisy)]
        read[every] = (states[-1], np.mean([s.brightness for s in states[-10:]], axis=0))  # after settling
    (state, mean), (_, mean_without) = read[10], read[0]
    assert state.ids.tolist() == known.ids.tolist() + [known.ids.max() + 1]  # one newcomer, a new ID
    assert readouts[10].reference.found_mask().tolist() == [True] * 10 + [False]  # added, not scanned
    np.testing.assert_allclose(state.positions_um[-1, 1:], positions[-1, 1:], atol=0.1)
    assert abs(abs(state.positions_um[-1, 0]) - 1.5) < 0.3  # a defocus, whose sign a frame cannot tell
    assert abs(mean[-1] / brightness[-1] - 1) < 0.12
    excess, excess_without = mean[0] / brightness[0] - 1, mean_without[0] / brightness[0] - 1
    assert excess_without > 0.05  # without the search, the neighbour reads the newcomer's light
    assert abs(excess) < 0.4 * excess_without  # its depth refitted at every look: its stamp takes it back


def test_a_remembered_neuron_entering_again_gets_its_id_and_its_side_of_focus_back():
    """A neuron a re-scan missed far beyond the edge is remembered; when a blob at its predicted place is
    added between scans (at a defocus of the wrong sign, which a frame cannot tell), it takes back its ID
    and the side of focus it was followed on. A blob elsewhere gets a new ID, and so does one where a
    remembered neuron is still modelled (held at the edge): no ID is read twice."""
    ref, brightness = _known_reference(n=12, seed=7)
    positions = ref.positions_um.copy()
    positions[-1] = [3.0, 30 * PX, -60 * PX]  # far beyond the left edge: no light in the field
    positions[-2] = [4.0, 48 * PX, -3 * PX]  # just beyond it: held in the model at the re-scan
    ref = dataclasses.replace(ref, positions_um=positions)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    readout.update(_render(ref, brightness), 0.0)
    rescan = dataclasses.replace(ref, ids=np.arange(500, 510), positions_um=positions[:-2],
                                 brightness=brightness[:-2])  # fmt: skip
    readout.carry_over(rescan)
    assert ref.ids[-1] not in readout.reference.ids and ref.ids[-2] in readout.reference.ids
    blobs = np.array([[-2.8, 30 * PX + 0.5, -60 * PX + 0.5], [1.0, 40 * PX, 5 * PX], positions[-2]])
    ids = readout.add_neurons(Entering(blobs, np.full(3, 20000.0)))
    assert ids[0] == ref.ids[-1] and not np.isin(ids[1:], np.concatenate([ref.ids, rescan.ids])).any()
    assert len(np.unique(readout.reference.ids)) == len(readout.reference.ids)
    assert readout.positions_um()[-3, 0] == pytest.approx(2.8, abs=1e-4)  # its side of focus, from memory
    assert readout.positions_um()[-2, 0] == pytest.approx(1.0, abs=1e-4)


def test_a_balls_table_is_its_psf_widened_by_the_balls_projection():
    from track.readout.balls import ball_blur
    from track.readout.stamps import ring_areas

    n_radii, step = 60, 0.5
    r = np.arange(n_radii) * step
    slope = 0.8  # px of Gaussian width per um of defocus
    sigma = 3.0 + slope * 0.25 * np.arange(-12, 13)[:, None]  # a Gaussian PSF (px) widening with defocus
    areas = ring_areas(n_radii, step)
    gaussian = np.exp(-(r[None] ** 2) / (2 * sigma**2))
    gaussian[:, -1] = 0
    psf = torch.as_tensor(gaussian / (gaussian @ areas)[:, None], dtype=torch.float32)  # unit flux per row
    blur = ball_blur(np.array([1.5, 3.0]), 0.25, step, n_radii, PX)
    assert blur.margin_rows == 6
    tables = blur.apply(psf).numpy()
    np.testing.assert_allclose(tables @ areas, 1.0, rtol=1e-4)  # a ball's image carries all its light

    def spread(table: np.ndarray) -> np.ndarray:  # mean squared radius (px^2) of each row's light
        return (table * areas * r**2).sum(-1) / (table * areas).sum(-1)

    # a uniform ball of radius a projects to <r^2> = 2 a^2 / 5, and its slices' defocus offsets (mean square
    # a^2 / 5) widen the Gaussian PSF by its slope
    for g, diameter in enumerate(blur.diameters_um):
        a = diameter / 2
        expected = 2 * sigma[6:-6, 0] ** 2 + 2 * slope**2 * a**2 / 5 + 2 * (a / PX) ** 2 / 5
        np.testing.assert_allclose(spread(tables[g]), expected, rtol=0.03)  # without the ball: -28 to -60%
    # apply and adjoint are transposes of each other
    probe = torch.rand(2, 13, n_radii, generator=torch.Generator().manual_seed(0))
    left = (blur.apply(psf) * probe).sum().item()
    np.testing.assert_allclose(left, (psf * blur.adjoint(probe)).sum().item(), rtol=1e-4)


def test_nuclei_of_two_sizes_get_their_own_diameters():
    from track.readout.balls import ball_blur
    from track.readout.calibrate import fit_stamps
    from track.readout.stamps import StampModel

    rng = np.random.default_rng(8)
    n = 16
    large = np.arange(n) % 2 == 1
    diameters = np.array([1.8, 3.4])
    reference = nominal_stamps(Optics(), PX, 10.0)  # the fit's table grid
    blur = ball_blur(diameters, 0.25, 0.5, reference.table.shape[1], PX)
    point = nominal_stamps(Optics(na=0.7, nucleus_diameter_um=0.4), PX, 10.0 + 0.25 * blur.margin_rows).table
    psf = np.zeros((len(point), reference.table.shape[1]), np.float32)
    width = min(psf.shape[1], point.shape[1]) - 1
    psf[:, :width] = point[:, :width]
    truth = StampModel(reference.defocus_um, 0.5, blur.apply(torch.as_tensor(psf)).numpy(), large.astype(int))
    yx = rng.uniform(14, 82, (n, 2))
    depth = rng.uniform(-3, 3, n)
    brightness = rng.uniform(10000, 30000, n)
    z = np.arange(-9.0, 9.25, 0.5)
    patches = cut_patches(torch.as_tensor(yx, dtype=torch.float32), truth.half_px, SHAPE)

    def plane(zk: float) -> np.ndarray:
        values = truth.evaluate(patches, torch.as_tensor(depth - zk, dtype=torch.float32)).value
        return patches.render(torch.as_tensor(brightness[:, None, None]) * values).numpy() + BACKGROUND

    scan = torch.as_tensor(np.stack([plane(zk) for zk in z]))
    positions = np.column_stack([depth, yx * PX])
    fits = {g: fit_stamps(scan, z, positions, PX, Optics(), StampFitConfig(size_groups=g)) for g in (1, 12)}
    groups = fits[12].stamps.groups
    chosen = StampFitConfig().diameters_um(Optics().nucleus_diameter_um)[groups]
    assert chosen[large].min() > chosen[~large].max()  # every larger nucleus got a larger diameter
    np.testing.assert_allclose(chosen, diameters[large.astype(int)], atol=0.5)  # two 0.25 um steps
    error = {g: np.abs(fit.brightness / brightness - 1).max() for g, fit in fits.items()}
    assert fits[12].relative_residual < 0.5 * fits[1].relative_residual
    assert error[12] < error[1]

    # a re-scan: neurons found again (here moved by 0.5 um) inherit their evidence, so strong earlier evidence
    # keeps a neuron's group against this scan's, and the others keep theirs (within one diameter step: the
    # flipped neighbour's light moves their fit a little)
    from track.readout.reference import ScanMemory

    evidence = fits[12].group_evidence.copy()
    flipped = (groups[0] + 6) % 12
    evidence[0, flipped] += 100.0
    memory = ScanMemory(positions + [0.0, 0.5, 0.0], evidence, match_um=2.0)
    inherited = memory.for_neurons(positions)
    np.testing.assert_allclose(inherited, memory.memory * evidence)
    again = fit_stamps(scan, z, positions, PX, Optics(), group_evidence=inherited)
    assert again.stamps.groups[0] == flipped
    assert np.abs(again.stamps.groups[1:] - groups[1:]).max() <= 1
    far = ScanMemory(positions + [0.0, 100.0, 0.0], evidence, match_um=2.0).for_neurons(positions)
    assert not far.any()  # nobody within 2 um (moved out of the field): every neuron starts afresh


def test_a_second_look_in_the_scans_residual_finds_a_dim_neuron_merged_with_a_bright_neighbour():
    from track.readout.reference import ResidualLook, build_reference

    truth = nominal_stamps(Optics(), PX, 10.0)
    z = np.arange(-8.0, 8.25, 0.5)
    spread = np.array([[-2.0, 20, 20], [1.0, 20, 70], [0.0, 70, 20], [2.5, 70, 70], [-1.0, 45, 45],
                       [3.0, 30, 48], [-3.0, 60, 50]])  # fmt: skip
    dim = np.array([[-1.0, 45, 45 + 2.4 / PX]])  # 2.4 um beside the neuron at (45, 45) px, 40% of its light
    depth_px = np.concatenate([spread, dim])
    brightness = np.concatenate([np.random.default_rng(0).uniform(20000, 30000, len(spread)), [0.0]])
    brightness[-1] = 0.4 * brightness[4]
    patches = cut_patches(torch.as_tensor(depth_px[:, 1:], dtype=torch.float32), truth.half_px, SHAPE)
    light = torch.as_tensor(brightness[:, None, None], dtype=torch.float32)
    defocus = [torch.as_tensor(depth_px[:, 0] - zk, dtype=torch.float32) for zk in z]
    planes = [patches.render(light * truth.evaluate(patches, d).value).numpy() for d in defocus]
    scan = np.stack(planes) + BACKGROUND
    scan = scan + np.random.default_rng(1).normal(0, 1, scan.shape) * np.sqrt(scan)
    positions = np.column_stack([depth_px[:, 0], depth_px[:, 1:] * PX])
    first = build_reference(scan, z, PX, Optics(), second_look=None)
    _, seen = match_points(first.positions_um, positions, 1.0)
    assert len(spread) not in seen  # the first pass misses the dim neuron
    again = build_reference(scan, z, PX, Optics(), second_look=ResidualLook())
    rows, seen = match_points(again.positions_um, positions, 1.0)
    assert set(seen.tolist()) == set(range(len(positions)))  # every neuron, the dim one too
    assert len(again) == len(first) + 1  # and nothing else
    assert again.fit_residual < first.fit_residual
    np.testing.assert_array_equal(again.ids, np.arange(len(again)))


def test_a_first_pass_neuron_between_two_nuclei_moves_onto_the_one_the_second_look_left():
    """Two nuclei 3.1 um apart in depth gave the first pass one peak between them; the second look found the
    lower one. The first-pass neuron's own light (the scan less the other neurons' fitted light) peaks at the
    upper nucleus, and it moves there; neurons far from any second-look one stay where they were."""
    from track.readout.calibrate import fit_stamps
    from track.readout.reference import ResidualLook

    truth = nominal_stamps(Optics(), PX, 10.0)
    z = np.arange(-8.0, 8.25, 0.5)
    depth_px = np.array([[-2.0, 20, 20], [1.0, 20, 70], [0.0, 70, 20], [2.5, 70, 70], [3.0, 30, 48],
                         [-3.0, 62, 50], [-1.5, 45, 45], [1.6, 45, 45.6]])  # fmt: skip
    brightness = torch.as_tensor(np.random.default_rng(0).uniform(20000, 30000, len(depth_px)))[:, None, None]
    patches = cut_patches(torch.as_tensor(depth_px[:, 1:], dtype=torch.float32), truth.half_px, SHAPE)
    scan = torch.stack([
        patches.render(brightness * truth.evaluate(
            patches, torch.as_tensor(depth_px[:, 0] - zk, dtype=torch.float32)).value) + BACKGROUND
        for zk in z
    ]).float()  # fmt: skip
    scan = scan + torch.randn(scan.shape, generator=torch.Generator().manual_seed(1)) * scan.sqrt()
    nuclei = np.column_stack([depth_px[:, 0], depth_px[:, 1:] * PX])
    between = [0.0, 45 * PX, 45.3 * PX]
    positions = np.concatenate([nuclei[:6], [between], nuclei[6:7] + [0.2, 0.1, 0.0]])  # last: second look's
    fitted = fit_stamps(scan, z, positions, PX, Optics())
    moved = ResidualLook().reposition(z, positions, len(positions) - 1, fitted, PX)
    assert np.linalg.norm(moved[6] - nuclei[7]) < 0.4  # onto the upper nucleus
    np.testing.assert_array_equal(moved[:6], positions[:6])
    np.testing.assert_array_equal(moved[7], positions[7])


def test_a_readout_and_its_live_copy_never_give_one_id_to_two_neurons():
    """Live, a copy of the readout is re-calibrated while the readout reads on; both add neurons meanwhile
    (entering the field, or new in the scan), and the IDs they give come from one counter."""
    ref, _ = _known_reference(seed=4)
    readout = LiveReadout(ReadoutConfig())
    readout.follow(ref)
    twin = copy.deepcopy(readout)
    a = readout.add_neurons(Entering(np.array([[0.5, 5.0, 5.0]]), np.array([1000.0])))
    b = twin.add_neurons(Entering(np.array([[0.5, 25.0, 5.0]]), np.array([1000.0])))
    assert a[0] != b[0] and min(a[0], b[0]) > ref.ids.max()
