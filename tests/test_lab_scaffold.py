"""The lab wing's shared scaffolding: the simulator of a shape, one data source, results paths checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from acquire.sim import SimConfig
from deepz.config import ConfigError
from deepz.lab.scaffold import machine, optics_of, seed_or_path, sim_config
from deepz.results import check_writable, results_file


def test_sim_config_sets_the_camera_shape_and_seed_and_keeps_the_rest() -> None:
    base = SimConfig(seed=5)
    base = base.model_copy(update={"optics": base.optics.model_copy(update={"na": 0.5})})
    square = sim_config(64, base=base)
    assert square.camera.shape == (64, 64) and square.seed == 5 and square.optics.na == 0.5
    wide = sim_config((32, 48), seed=9)
    assert wide.camera.shape == (32, 48) and wide.seed == 9
    assert wide.optics == SimConfig().optics
    assert base.camera.shape == SimConfig().camera.shape  # the base is not changed


def test_optics_of_a_simulated_microscope() -> None:
    sim = SimConfig().optics
    optics = optics_of(sim)
    assert (optics.numerical_aperture, optics.wavelength_um, optics.pixel_size_um) == (
        sim.na, sim.emission_um, sim.pixel_size_um)


@pytest.mark.parametrize(("path", "seed"), [(None, None), (Path("stacks.zarr"), 3)])
def test_an_evaluation_takes_exactly_one_data_source(path: Path | None, seed: int | None) -> None:
    with pytest.raises(ConfigError, match="exactly one of --stacks PATH or --seed S"):
        seed_or_path(path, seed, path_flag="--stacks")
    seed_or_path(Path("stacks.zarr"), None, path_flag="--stacks")
    seed_or_path(None, 3, path_flag="--stacks")


def test_machine_names_where_a_measurement_ran() -> None:
    import torch

    record = machine(packages=("numpy", "no-such-package"))
    assert record["cpu_count"] == os.cpu_count() and record["torch_threads"] == torch.get_num_threads()
    assert record["numpy"] and record["no-such-package"] is None


def test_results_paths_are_checked_before_the_work(tmp_path: Path) -> None:
    nested = tmp_path / "a" / "b" / "r.json"
    check_writable(nested)
    assert nested.parent.is_dir() and list(nested.parent.iterdir()) == []  # the probe file is gone
    ran = []
    with pytest.raises(OSError):
        with results_file(Path(os.devnull) / "r.json"):
            ran.append(True)
    assert ran == []
