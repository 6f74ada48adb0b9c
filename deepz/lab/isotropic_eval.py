"""Measure Self-Net restoration: isotropy ratio (axial / lateral FWHM of isolated nuclei) and error vs truth.

Simulated: the simulator's confocal-like modality rendered noise-free at z step = pixel size is the truth;
the same worm rendered with noise every 1.5 um is the anisotropic input. Real: targettrack worm volumes
(0.1625 um pixels, 1.5 um planes) with annotated or labelled nucleus centres, where no truth volume exists.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from deepz.data_paths import TARGETTRACK_VOXEL_UM
from deepz.lab.scaffold import sim_config
from infer.isotropic.selfnet import (
    IsotropicConfig,
    IsotropicModel,
    interpolate_z,
    restore_volume,
    train_isotropic,
)
from infer.metrics import psnr, ssim
from infer.resolution import nucleus_fwhm_um

POINT_FRAMES = [
    ("ex2", "gt"),
    ("ex2", "tar"),
    ("ex3", "gt"),
    ("ex3", "tar"),
    ("ex4", "gt"),
    ("ex4", "tar"),
    ("ex5", "tar"),
    ("ex6", "gt"),
    ("ex6", "tar"),
]  # ex5 gt is ex3 gt
ISOLATION_UM = 4.0


def nucleus_widths(
    volumes: dict[str, np.ndarray],
    centres_px: np.ndarray,
    pixel_um: float,
    isolation_um: float = ISOLATION_UM,
) -> dict[str, Any]:
    """Median axial and lateral FWHM and their ratio per isotropic volume, over nuclei measurable in all."""
    widths = {
        k: nucleus_fwhm_um(v, centres_px, pixel_um, isolation_um=isolation_um) for k, v in volumes.items()
    }
    ok = np.all([np.all(np.isfinite(w), axis=1) for w in widths.values()], axis=0)
    out: dict[str, Any] = {
        "n_nuclei": int(ok.sum()),
        "n_centres": len(centres_px),
        "isolation_um": isolation_um,
    }
    for k, w in widths.items():
        axial, lateral = (
            (float(np.median(w[ok, 0])), float(np.median(w[ok, 1:]))) if ok.any() else (np.nan, np.nan)
        )
        out[k] = {"axial_fwhm_um": axial, "lateral_fwhm_um": lateral, "isotropy_ratio": axial / lateral}
    return out


def errors_vs_truth(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """PSNR (dB), SSIM of xy planes and of xz slices, NRMSE = RMSE / truth range."""
    data_range = float(truth.max() - truth.min())
    rmse = float(np.sqrt(np.mean((pred.astype(np.float64) - truth) ** 2)))
    return {
        "psnr_db": psnr(pred, truth, data_range),
        "ssim_xy": float(np.mean(ssim(pred, truth, data_range))),
        "ssim_xz": float(np.mean(ssim(pred.transpose(1, 0, 2), truth.transpose(1, 0, 2), data_range))),
        "nrmse": rmse / data_range,
    }


def simulated_volumes(
    seed: int,
    *,
    shape: tuple[int, int] = (256, 256),
    z_um: tuple[float, float] = (-10.0, 10.0),
    z_step_um: float = 1.5,
    noise: bool = True,
) -> dict[str, Any]:
    """Truth (fine z, noise-free confocal), anisotropic noisy input, voxel sizes and true nucleus centres."""
    from acquire.sim import WormSimulator

    config = sim_config(shape, seed=seed)
    sim = WormSimulator(config)
    t = float(np.random.default_rng(seed).uniform(0, config.worm.motion.period_s))
    px = sim.pixel_size_um
    z_in = np.arange(z_um[0], z_um[1] + 1e-6, z_step_um)
    z_true = z_in[0] + np.arange(int(np.floor((z_in[-1] - z_in[0]) / px + 1e-6)) + 1) * px
    truth = sim.focal_stack(t, z_true, noise=False, modality="confocal")
    anisotropic = sim.focal_stack(t, z_in, noise=noise, modality="confocal")
    pos = sim.truth(t).positions_um
    centres = np.stack([(pos[:, 0] - z_true[0]) / px, pos[:, 1] / px, pos[:, 2] / px], axis=1)
    inside = np.all((centres >= 0) & (centres <= np.asarray(truth.shape) - 1), axis=1)
    return {
        "truth": truth,
        "input": anisotropic,
        "input_voxel_um": (z_step_um, px, px),
        "pixel_um": px,
        "centres_px": centres[inside],
        "t_s": t,
        "seed": seed,
    }


def evaluate_simulated(
    seed: int, config: IsotropicConfig, *, plots: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Train Self-Net on one simulated anisotropic volume, restore it, score input / output / truth."""
    case = simulated_volumes(seed)
    t0 = time.perf_counter()
    model = train_isotropic([case["input"]], case["input_voxel_um"], config, progress=progress)
    t_train = time.perf_counter() - t0
    t0 = time.perf_counter()
    restored, _ = restore_volume(model, case["input"], case["input_voxel_um"], progress=progress)
    t_restore = time.perf_counter() - t0
    dz, _, dx = case["input_voxel_um"]
    interpolated = interpolate_z(case["input"].astype(np.float32), dz, dx)
    truth = case["truth"].astype(np.float32)
    volumes = {"input_interpolated": interpolated, "selfnet": restored, "truth": truth}
    results: dict[str, Any] = {
        "case": {
            "seed": seed,
            "t_s": case["t_s"],
            "modality": "confocal",
            "input_voxel_um": list(case["input_voxel_um"]),
            "truth_voxel_um": [dx, dx, dx],
            "shape_in": list(case["input"].shape),
            "shape_out": list(truth.shape),
        },
        "degradation": model.degradation.to_dict(),
        "training": {
            "steps": config.steps,
            "final_l1": float(np.mean(model.losses[-20:])),
            "seconds": t_train,
        },
        "restore_seconds": t_restore,
        "isotropy": nucleus_widths(volumes, case["centres_px"], dx),
        "error_vs_truth": {k: errors_vs_truth(volumes[k], truth) for k in ("input_interpolated", "selfnet")},
    }
    if plots:
        plot_slices(plots / f"sim-seed{seed}.png", volumes, dx, f"simulated worm, seed {seed}")
    return results


def _points_frames(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, (Z, Y, X) red channel, (N, 3) centres in px (z, y, x)) of the annotated targettrack frames."""
    out = []
    for ex, frame in POINT_FRAMES:
        volume = np.load(root / "data_points" / ex / f"frame_{frame}.npy", allow_pickle=False)[0].transpose(
            2, 1, 0
        )
        pts = np.load(root / "data_points" / ex / f"pts_{frame}.npy", allow_pickle=False)
        pts = pts[np.all(np.isfinite(pts), axis=1)]
        out.append((f"data_points/{ex}/{frame}", volume, pts[:, ::-1]))
    return out


def _mask_frames(root: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, (Z, Y, X) volume, label centroids in px (z, y, x)) of the targettrack data_mask frames."""
    from scipy.ndimage import center_of_mass

    out = []
    for path in sorted((root / "data_mask").glob("*/frame_*.npy")):
        volume = np.load(path, allow_pickle=False).transpose(2, 1, 0)
        mask = np.load(path.with_name(path.name.replace("frame_", "mask_")), allow_pickle=False).transpose(
            2, 1, 0
        )
        labels = [k for k in np.unique(mask) if k > 0]
        centres = np.asarray(center_of_mass(mask > 0, mask, labels)).reshape(-1, 3)
        out.append((f"data_mask/{path.parent.name}/{path.stem}", volume, centres))
    return out


def evaluate_targettrack(
    config: IsotropicConfig, *, root: Path, plots: Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """Per data set (annotated points, labelled masks): train on its first frame, restore every frame, and
    report the isotropy ratio before (linear interpolation) and after restoration. ``root`` is the data set
    folder (deepz.data_paths.targettrack_dir)."""
    root = root / "data"
    dz, _, dx = TARGETTRACK_VOXEL_UM
    results: dict[str, Any] = {"voxel_um": list(TARGETTRACK_VOXEL_UM), "sets": {}}
    for set_name, frames in (("data_points", _points_frames(root)), ("data_mask", _mask_frames(root))):
        t0 = time.perf_counter()
        model: IsotropicModel = train_isotropic(
            [frames[0][1]], TARGETTRACK_VOXEL_UM, config, progress=progress
        )
        entry: dict[str, Any] = {
            "trained_on": frames[0][0],
            "train_seconds": time.perf_counter() - t0,
            "degradation": model.degradation.to_dict(),
            "frames": {},
        }
        for name, volume, centres in frames:
            t0 = time.perf_counter()
            restored, _ = restore_volume(model, volume, TARGETTRACK_VOXEL_UM, progress=progress)
            seconds = time.perf_counter() - t0
            volumes = {
                "input_interpolated": interpolate_z(volume.astype(np.float32), dz, dx),
                "selfnet": restored,
            }
            fine = centres * np.array([dz / dx, 1, 1])
            entry["frames"][name] = nucleus_widths(volumes, fine, dx) | {
                "restore_seconds": seconds,
                "shape_in": list(volume.shape),
            }
            if plots and name == frames[0][0]:
                plot_slices(plots / f"targettrack-{set_name}.png", volumes, dx, name)
        ok = [f for f in entry["frames"].values() if f["n_nuclei"]]
        entry["median_isotropy_ratio"] = {
            k: float(np.median([f[k]["isotropy_ratio"] for f in ok]))
            for k in ("input_interpolated", "selfnet")
        }
        entry["nuclei_measured"] = int(sum(f["n_nuclei"] for f in ok))
        results["sets"][set_name] = entry
    return results


def plot_slices(path: Path, volumes: dict[str, np.ndarray], pixel_um: float, title: str) -> None:
    """One xz slice (through the brightest row) and the xy max projection of each volume, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(iter(volumes.values()))
    row = int(np.argmax(first.max(axis=(0, 2))))
    fig, axes = plt.subplots(2, len(volumes), figsize=(4.5 * len(volumes), 6), squeeze=False)
    for col, (name, v) in enumerate(volumes.items()):
        lo, hi = np.percentile(v, (1, 99.8))
        extent = (0, v.shape[2] * pixel_um, v.shape[0] * pixel_um, 0)
        axes[0, col].imshow(v[:, row], cmap="magma", vmin=lo, vmax=hi, extent=extent)
        axes[0, col].set_title(f"{name}: xz at y={row * pixel_um:.1f} um")
        axes[0, col].set_xlabel("x (um)")
        axes[0, col].set_ylabel("z (um)")
        axes[1, col].imshow(v.max(axis=0), cmap="magma", vmin=lo, vmax=hi)
        axes[1, col].set_title("xy max projection")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
