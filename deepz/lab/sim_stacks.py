"""Simulated focal stacks with truth: fresh worms, held-out worms for a model, real targettrack arrangements.

What `deepz simulate stacks`, `deepz train` (a recipe's missing stacks) and `deepz evaluate --seed` render.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from deepz.data_paths import TARGETTRACK_VOXEL_UM
from deepz.lab import scaffold


def render_stacks(out: Path, *, n: int, seed: int, shape: tuple[int, int], z_um: list[float],
                  confocal: bool = False, sim_config: Optional[Path] = None, progress: bool = True) -> Path:
    """Render n simulated worms (seeds seed*1000 + i, random times) as focal stacks + truth + defocus PSFs."""
    import numpy as np
    from tqdm import tqdm

    from acquire.sim import SimConfig, WormSimulator
    from infer.data import write_stacks

    base = scaffold.sim_config(shape, base=SimConfig.from_toml(sim_config) if sim_config else None)
    z = np.asarray(z_um, dtype=np.float32)
    rng = np.random.default_rng(seed)
    noisy, clean, conf, positions, times = [], [], [], [], []
    for i in tqdm(range(n), desc="render stacks", disable=not progress):
        sim = WormSimulator(base.model_copy(update={"seed": seed * 1000 + i}))
        t = float(rng.uniform(0, base.worm.motion.period_s))
        noisy.append(sim.focal_stack(t, z, noise=True))
        clean.append(sim.focal_stack(t, z, noise=False))
        if confocal:
            conf.append(sim.focal_stack(t, z, noise=False, modality="confocal"))
        positions.append(sim.truth(t).positions_um.astype(np.float32))
        times.append(t)
    targets = {"clean": np.stack(clean)} | ({"confocal": np.stack(conf)} if confocal else {})
    step = float(np.median(np.diff(z)))
    psf_z = np.arange(-float(abs(z).max()), float(abs(z).max()) + step / 2, step)
    path = write_stacks(
        out, np.stack(noisy), z, pixel_size_um=base.optics.pixel_size_um, offset_adu=base.camera.offset_adu,
        targets=targets, positions_um=positions,
        attrs={"source": "acquire.sim.WormSimulator", "seed": seed, "t_s": times,
               "sim_config": base.model_dump(mode="json"),
               "optics": scaffold.optics_of(base.optics).model_dump()},
    )
    _write_defocus_psf(path, sim, psf_z)
    return path


TARGETTRACK_FRAMES = [("ex2", "gt"), ("ex2", "tar"), ("ex3", "gt"), ("ex3", "tar"), ("ex4", "gt"),
                      ("ex4", "tar"), ("ex6", "gt"), ("ex6", "tar")]  # ex5 gt = ex3 gt; ex5 tar has 23 points


def render_targettrack(out: Path, *, z_um: list[float], root: Path, seed: int = 0,
                       shape: tuple[int, int] = (256, 256)) -> Path:
    """Image the real targettrack neuron arrangements (annotated centres) through the simulated optics; ``root``
    is the data set folder (deepz.data_paths.targettrack_dir)."""
    import numpy as np

    from acquire.sim import GroundTruth, WormSimulator
    from infer.data import write_stacks

    points = root / "data" / "data_points"
    base = scaffold.sim_config(shape)
    px = base.optics.pixel_size_um
    z = np.asarray(z_um, np.float32)
    noisy, clean, positions = [], [], []
    for i, (ex, frame) in enumerate(TARGETTRACK_FRAMES):
        pts = np.load(points / ex / f"pts_{frame}.npy")
        pts = pts[~np.isnan(pts[:, 0])]
        pos = pts[:, ::-1] * np.asarray(TARGETTRACK_VOXEL_UM)  # (x, y, z) voxels -> (z, y, x) um
        pos = pos - pos.mean(axis=0) + np.array([0.0, (shape[0] - 1) * px / 2, (shape[1] - 1) * px / 2])
        worm = base.worm.model_copy(update={"n_neurons": len(pos)})
        sim = WormSimulator(base.model_copy(update={"worm": worm, "seed": seed * 1000 + i}))
        synthetic = sim.truth(0.0)  # brightness and ids of a simulated worm, positions from the real one
        real = GroundTruth(t_s=0.0, ids=synthetic.ids, positions_um=pos, activity=synthetic.activity,
                           brightness=synthetic.brightness)
        sim.truth = lambda t_s, real=real: real  # the optics, camera and noise stay the simulator's
        noisy.append(sim.focal_stack(0.0, z, noise=True))
        clean.append(sim.focal_stack(0.0, z, noise=False))
        positions.append(pos.astype(np.float32))
    path = write_stacks(out, np.stack(noisy), z, pixel_size_um=px, offset_adu=base.camera.offset_adu,
                        targets={"clean": np.stack(clean)}, positions_um=positions,
                        attrs={"source": "targettrack annotated neuron centres through acquire.sim optics",
                               "frames": [f"{e}/{f}" for e, f in TARGETTRACK_FRAMES]})
    step = float(np.median(np.diff(z)))
    _write_defocus_psf(path, sim, np.arange(-float(abs(z).max()), float(abs(z).max()) + step / 2, step))
    return path


def neuron_detector():
    """The tracking package's detector as a deepz.lab.model_eval.Detector (positions from the first voxel)."""
    from track.detect import detect_neurons

    return lambda volume, voxel_um: detect_neurons(volume, voxel_um).positions_um


def _write_defocus_psf(path: Path, sim, defocus_um) -> None:
    """Store the image of a mid-sized nucleus at each defocus (the known PSF for the Wiener baseline)."""
    import numpy as np
    import zarr

    bank = sim.stamps("widefield")
    cls = len(bank.stamps) // 2
    planes = [bank.stamps[cls][j] for j in bank.plane_index(defocus_um)]
    size = max(p.shape[0] for p in planes)
    psf = np.zeros((len(planes), size, size), np.float32)
    for k, p in enumerate(planes):
        o = (size - p.shape[0]) // 2
        psf[k, o:o + p.shape[0], o:o + p.shape[1]] = p
    root = zarr.open_group(str(path), mode="r+")
    root.create_array("psf", data=psf)
    root.create_array("psf_defocus_um", data=np.asarray(defocus_um, np.float32))


def model_planes(loaded) -> list[float]:
    """The focal planes a model is scored on: its axial range at its axial step."""
    import numpy as np

    rng_um = loaded.manifest.axial_range_um
    return np.arange(-rng_um, rng_um + 1e-6, loaded.manifest.axial_step_um).tolist()


def render_held_out(loaded, out: Path, *, seed: int, n: int, shape: tuple[int, int] = (256, 256)) -> Path:
    """Held-out worms for a model (`deepz evaluate --seed`): n fresh stacks over its axial range."""
    return render_stacks(out, n=n, seed=seed, shape=shape, z_um=model_planes(loaded),
                         confocal=loaded.manifest.modality == "confocal")


def evaluate_held_out(model_dir: Path, *, seed: int, n: int, shape: tuple[int, int] = (256, 256)) -> dict:
    """`deepz evaluate MODEL --seed S --n N` as a function: the results, with the command that made them."""
    import tempfile

    from deepz.lab.model_eval import evaluate
    from infer.model_io import load_model

    loaded = load_model(model_dir)
    with tempfile.TemporaryDirectory() as tmp:
        stacks = render_held_out(loaded, Path(tmp) / "held_out.zarr", seed=seed, n=n, shape=shape)
        results = evaluate(loaded, stacks, detector=neuron_detector())
    return {"command": {"stacks": None, "seed": seed, "n": n, "shape": list(shape)}} | results
