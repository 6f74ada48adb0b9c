"""Live calibrations in a process of their own: the same reference as calibrating in place, one ID counter
for the readout and the copy calibrated in the process, the child's errors raised here, and the child ended
by closing (or dropping) its handle."""

from __future__ import annotations

import gc
import os

import numpy as np
import pytest

from acquire.sim import CameraConfig, SimConfig, WormSimulator
from deepz.calibration import live_calibrator
from deepz.calibration_process import CalibrationProcess, CalibrationProcessError
from deepz.config import CalibrationConfig
from deepz.readout_stage import CalibrationJob, ThreadCalibrator
from track.readout import LiveReadout, Optics, ReadoutConfig
from track.readout.calibrate import StampFitConfig
from track.readout.entering import Entering

Z = np.arange(-8.0, 8.5, 1.0)
CONFIG = ReadoutConfig(fit=StampFitConfig(iterations=6))


@pytest.fixture(scope="module")
def sim() -> WormSimulator:
    return WormSimulator(SimConfig(seed=5, camera=CameraConfig(shape=(96, 96))))


@pytest.fixture(scope="module")
def process():
    calibrator = live_calibrator(CalibrationConfig(worker="process"), LiveReadout(CONFIG))
    assert isinstance(calibrator, CalibrationProcess)
    yield calibrator
    calibrator.close()


def _scan(sim: WormSimulator, t_s: float) -> np.ndarray:
    return np.stack([sim.render(t_s + k / 100, float(z)) for k, z in enumerate(Z)])


def _first(stack: np.ndarray) -> CalibrationJob:
    return CalibrationJob(stack, Z, first=True, pixel_size_um=0.325, optics=Optics())


@pytest.mark.parametrize(("worker", "device", "kind"), [
    ("auto", "cpu", ThreadCalibrator), ("auto", "cuda:0", CalibrationProcess),
    ("process", "cpu", CalibrationProcess), ("thread", "cuda", ThreadCalibrator),
])  # fmt: skip
def test_live_runs_calibrate_in_a_process_on_a_gpu_and_in_a_thread_on_a_cpu_unless_told(worker, device, kind):
    calibrator = live_calibrator(CalibrationConfig(worker=worker), LiveReadout(CONFIG), device)
    calibrator.close()
    assert isinstance(calibrator, kind)


def test_a_calibration_in_the_process_reads_as_one_made_in_place(sim, process) -> None:
    job = _first(_scan(sim, 0.0))
    here = LiveReadout(CONFIG)
    reference_here = job.run(here)
    there, reference_there = process.calibrate(process.hold(LiveReadout(CONFIG)), job)
    assert len(reference_here.ids) >= 10
    np.testing.assert_array_equal(reference_there.ids, reference_here.ids)
    np.testing.assert_allclose(reference_there.positions_um, reference_here.positions_um, atol=1e-5)
    for t in range(5):
        frame = sim.render(0.2 + t / 100, 0.0)
        read_here, read_there = here.update(frame, t / 100), there.update(frame, t / 100)
    np.testing.assert_allclose(read_there.brightness, read_here.brightness, rtol=1e-4, atol=1e-3)


def test_ids_given_while_the_process_recalibrates_never_meet_its_new_ids(sim, process) -> None:
    """The copy in the process gives the neurons new in its scan IDs from the readout's own counter (called
    back), so neurons that entered the field meanwhile, here, keep IDs no one else has."""
    stack = _scan(sim, 0.0)
    half = stack.copy()
    half[:, :, 48:] = np.median(stack)  # the first scan sees only the left half of the field
    readout = LiveReadout(CONFIG)
    process_first, _ = process.calibrate(process.hold(readout), _first(half))
    readout = process_first
    first_ids = set(readout.reference.ids.tolist())
    held = process.hold(readout)
    entering = Entering(np.array([[0.0, 10.0, 10.0], [1.0, 20.0, 20.0]]), np.full(2, 1000.0))
    entered = readout.add_neurons(entering)
    full = CalibrationJob(stack, Z, first=False, pixel_size_um=0.325, optics=Optics(), plane_period_s=0.01)
    calibrated, reference = process.calibrate(held, full)
    new_ids = set(reference.ids.tolist()) - first_ids
    assert len(new_ids) >= 3  # the right half's neurons
    assert not new_ids & set(entered.tolist())
    # one counter for both from now on too
    later_here = int(readout.add_neurons(Entering(np.array([[0.0, 30.0, 30.0]]), np.full(1, 1000.0)))[0])
    later_there = int(calibrated.add_neurons(Entering(np.array([[0.0, 40.0, 40.0]]), np.full(1, 1000.0)))[0])
    assert later_here != later_there
    assert not {later_here, later_there} & (first_ids | new_ids | set(entered.tolist()))


def test_what_the_calibration_raised_in_the_process_is_raised_here(sim, process) -> None:
    bad = CalibrationJob(_scan(sim, 0.0)[:3], Z, first=True, pixel_size_um=0.325, optics=Optics())
    with pytest.raises(ValueError, match="one focus offset per plane") as raised:
        process.calibrate(process.hold(LiveReadout(CONFIG)), bad)
    assert "in the calibration process" in str(raised.value.__cause__)
    _, reference = process.calibrate(process.hold(LiveReadout(CONFIG)), _first(_scan(sim, 0.0)))
    assert len(reference.ids) >= 10  # and the process goes on calibrating


def test_once_the_process_died_calibrations_are_made_here_and_closing_or_dropping_the_handle_ends_it(
    sim, caplog
) -> None:
    process = CalibrationProcess()
    os.kill(process.pid, 9)
    _, reference = process.calibrate(process.hold(LiveReadout(CONFIG)), _first(_scan(sim, 0.0)))
    assert len(reference.ids) >= 10
    assert "calibration process exited with code -9; calibrating in this process" in caplog.text
    assert process.where == "the readout's process (its own exited with code -9)"
    process.close()
    with pytest.raises(CalibrationProcessError, match="closed"):
        process.calibrate(process.hold(LiveReadout(CONFIG)), _first(_scan(sim, 0.0)))
    dropped = CalibrationProcess()
    pid = dropped.pid
    del dropped
    gc.collect()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # ended and reaped
