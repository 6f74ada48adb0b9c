"""Score a super-resolution model against the true high-resolution images of registered pairs, beside bicubic
upsampling and Richardson-Lucy deconvolution: PSNR, SSIM, Pearson r, lateral FWHM of isolated in-focus
nuclei (or beads) and decorrelation resolution.

Caveats, measured on the simulator: nuclei (2-3 um) are much larger than either PSF, so their FWHM mostly
measures their size (a low-NA image, close to a projection of the ellipsoid, can even be narrower than a
high-NA optical section); sub-resolution beads measure resolution. Decorrelation analysis assumes white
noise: interpolated images (bicubic, Richardson-Lucy) carry correlated noise that it mistakes for signal,
and noise-free images (the target, a denoising network) give it no noise floor; so it is reported for the raw
input frames at their own sampling too, where it is valid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from infer.metrics import pearson, psnr, ssim
from infer.model_io import LoadedModel
from infer.resolution import decorrelation_resolution_um, nucleus_fwhm_um
from infer.superres.baselines import RL_ITERATIONS, richardson_lucy
from infer.superres.live import superres_engine_stage
from infer.superres.pairs import PairFileError, RegisteredPairs

METHODS = ("network", "bicubic", "richardson_lucy", "target")
IN_FOCUS_UM = 0.5  # nuclei whose centre lies within this of the focal plane are measured for FWHM ...
MIN_ISOLATION_UM = 3.0  # ... when no other in-focus one lies within max(this, 2 nucleus diameters)


def check_superres_model(loaded: LoadedModel, pairs: RegisteredPairs) -> None:
    """Raise a PairFileError unless the model is a super-resolution model for these pairs' grids and modality."""
    m = loaded.manifest
    if m.task != "superres":
        raise PairFileError(f"model {m.name} is a {m.task} model, not a super-resolution one (task 'superres').")
    upsample = int(m.details.get("upsample", 1))
    if upsample != pairs.upsample or m.modality != pairs.modality:
        raise PairFileError(
            f"model {m.name} upsamples x{upsample} to {m.modality} but the pairs are x{pairs.upsample} to "
            f"{pairs.modality}; render pairs of the model's kind ({m.details.get('pair')!r})."
        )


def _resolution(image: np.ndarray, nuclei: np.ndarray | None, px: float, isolation_um: float
                ) -> tuple[list[float], float]:
    """Lateral FWHMs (um) of isolated in-focus nuclei (both axes) and the decorrelation resolution (um)."""
    fwhm: list[float] = []
    if nuclei is not None:
        ok = np.isfinite(nuclei[:, 0]) & (np.abs(nuclei[:, 2]) <= IN_FOCUS_UM)
        values = nucleus_fwhm_um(image, nuclei[ok, :2], px, isolation_um=isolation_um)
        fwhm = values[np.isfinite(values)].ravel().tolist()
    return fwhm, decorrelation_resolution_um(image, px)


def _isolation_um(pairs: RegisteredPairs, i: int) -> float:
    """How far apart in-focus objects of pair i must be to be measured (by their diameter when known)."""
    diameters = pairs.attrs.get("nucleus_diameter_um")
    return max(MIN_ISOLATION_UM, 2 * float(diameters[i])) if diameters else 2 * MIN_ISOLATION_UM


def evaluate_superres(loaded: LoadedModel, pairs: RegisteredPairs, *, plots_dir: Path | None = None,
                      rl_iterations: int = RL_ITERATIONS, progress: bool = True) -> dict[str, Any]:
    """Per-method image and resolution metrics over all pairs (offset removed; the target is the truth)."""
    check_superres_model(loaded, pairs)
    if pairs.psf is None:
        raise PairFileError("these pairs carry no input PSF ('psf' array) for the Richardson-Lucy baseline; "
                            "render them with `deepz simulate pairs` or add the low-resolution PSF.")
    offset, px = pairs.offset_adu, pairs.pixel_size_um
    # the live engine stage itself (reference torch engine on the CPU), fed the raw input frames
    stage = superres_engine_stage("torch", loaded, tuple(pairs.noisy.shape[-2:]), px * pairs.upsample,
                                  np.zeros(1), "cpu")
    keys = ("psnr", "ssim", "pearson_r", "decorrelation_um", "fwhm_um")
    scores: dict[str, dict[str, list[float]]] = {m: {k: [] for k in keys} for m in METHODS}
    raw_decorrelation: list[float] = []
    example: dict[str, np.ndarray] = {}
    for i in tqdm(range(pairs.n), desc="evaluate superres", disable=not progress):
        raw = np.asarray(pairs.noisy[i])
        target = np.asarray(pairs.target[i], np.float32) - offset
        bicubic = pairs.model_input(i).astype(np.float32) - offset
        images = {
            "network": stage.run(raw[None])[0, 0].astype(np.float32) - offset,
            "bicubic": bicubic,
            "richardson_lucy": richardson_lucy(bicubic, pairs.psf, rl_iterations),
            "target": target,
        }
        data_range = float(np.ptp(target))
        nuclei = None if pairs.nuclei is None else pairs.nuclei[i]
        isolation = _isolation_um(pairs, i)
        raw_px = px * pairs.upsample
        raw_decorrelation.append(decorrelation_resolution_um(raw.astype(np.float64) - offset, raw_px))
        for name, img in images.items():
            s = scores[name]
            if name != "target":
                s["psnr"].append(psnr(img, target, data_range))
                s["ssim"].append(float(ssim(img, target, data_range)))
                s["pearson_r"].append(pearson(img, target))
            fwhm, decorrelation = _resolution(img, nuclei, px, isolation)
            s["fwhm_um"] += fwhm
            s["decorrelation_um"].append(decorrelation)
        if i == 0:
            example = images
    results = {
        "model": {"name": loaded.manifest.name, "digest": loaded.digest},
        "data": {"n_pairs": pairs.n, "kind": pairs.attrs.get("kind", "disk"), "upsample": pairs.upsample,
                 "pixel_size_um": px, "shape": list(pairs.shape), "digest": pairs.digest},
        "settings": {"richardson_lucy_iterations": rl_iterations, "in_focus_um": IN_FOCUS_UM,
                     "isolation_um": f"max({MIN_ISOLATION_UM}, 2 x object diameter)", "engine": "torch (cpu)",
                     "psnr_ssim_data_range": "per pair: max - min of the target (offset removed)",
                     "bicubic": "the raw input, bicubic-upsampled onto the target grid (itself when upsample = 1)"},
        "methods": {name: _summarise(s) for name, s in scores.items()},
        "raw_input_decorrelation_um_median": round(float(np.nanmedian(raw_decorrelation)), 4)
        if np.isfinite(raw_decorrelation).any() else None,
    }
    results["network_beats"] = {
        base: {k: _better(k, results["methods"]["network"][k], results["methods"][base][k])
               for k in ("psnr", "ssim", "pearson_r", "fwhm_um_median", "decorrelation_um_median")}
        for base in ("bicubic", "richardson_lucy")
    }
    if plots_dir is not None:
        plot_example(example, results, Path(plots_dir) / "superres_example.png", px)
    return results


def _summarise(s: dict[str, list[float]]) -> dict[str, Any]:
    fwhm = np.asarray(s["fwhm_um"])
    decorrelation = np.asarray(s["decorrelation_um"])
    out: dict[str, Any] = {k: round(float(np.mean(s[k])), 4) for k in ("psnr", "ssim", "pearson_r") if s[k]}
    out |= {
        "fwhm_um_median": round(float(np.median(fwhm)), 4) if len(fwhm) else None,
        "fwhm_n": int(len(fwhm)),
        "decorrelation_um_median": round(float(np.nanmedian(decorrelation)), 4)
        if np.isfinite(decorrelation).any() else None,
    }
    return out


def _better(metric: str, network: float | None, baseline: float | None) -> bool | None:
    """Whether the network's value is better (higher for PSNR/SSIM/r, smaller for resolution lengths)."""
    if network is None or baseline is None:
        return None
    return network < baseline if metric.endswith("_median") else network > baseline


def plot_example(images: dict[str, np.ndarray], results: dict[str, Any], path: Path, px: float) -> None:
    """Whole field and a zoomed centre of one pair for every method, with its PSNR / SSIM / resolution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = images["target"].shape
    zoom = (slice(h // 2 - h // 8, h // 2 + h // 8), slice(w // 2 - w // 8, w // 2 + w // 8))
    hi = float(np.percentile(images["target"], 99.8))
    fig, axes = plt.subplots(2, len(METHODS), figsize=(3.4 * len(METHODS), 7))
    for col, name in enumerate(METHODS):
        m = results["methods"][name]
        u = results["data"]["upsample"]
        title = {"network": "network", "bicubic": f"input, bicubic x{u}" if u > 1 else "input",
                 "richardson_lucy": "Richardson-Lucy", "target": "true high-res"}[name]
        sub = f"\n{m['psnr']:.1f} dB  SSIM {m['ssim']:.3f}" if "psnr" in m else "\n"
        sub += f"\nFWHM {m['fwhm_um_median']} um, decorr. {m['decorrelation_um_median']} um"
        for row, view in enumerate((np.s_[:, :], zoom)):
            ax = axes[row, col]
            ax.imshow(images[name][view], cmap="gray", vmin=0, vmax=hi, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, col].set_title(title + sub, fontsize=9)
    axes[1, 0].set_ylabel(f"centre x4 ({w // 4 * px:.0f} um)")
    fig.suptitle(f"{results['model']['name']}: first pair shown; metrics are means (FWHM, decorrelation: "
                 f"medians) over {results['data']['n_pairs']} pairs")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A short human-readable table."""
    lines = [f"model {results['model']['name']} on {results['data']['n_pairs']} pairs "
             f"(x{results['data']['upsample']}, {results['data']['kind']})"]
    for name, m in results["methods"].items():
        head = (f"PSNR {m['psnr']:6.2f} dB  SSIM {m['ssim']:.4f}  r {m['pearson_r']:.4f}" if "psnr" in m
                else " " * 40)
        lines.append(f"  {name:16s} {head}  FWHM median {m['fwhm_um_median']} um (n={m['fwhm_n']})  "
                     f"decorrelation {m['decorrelation_um_median']} um")
    raw = results["raw_input_decorrelation_um_median"]
    lines.append(f"  raw input frames (own sampling): decorrelation {raw} um")
    lines.append(f"  network beats: {results['network_beats']}")
    return lines
