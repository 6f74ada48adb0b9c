"""Score a Deep-Z model on focal stacks with ground truth: virtual vs true planes, baselines, neurons."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from infer.data import FocalStacks, open_stacks
from infer.metrics import MatchResult, match_points, pearson, psnr, ssim
from infer.model_io import LoadedModel, load_manifest, write_manifest

# (Z, Y, X) volume, voxel (dz, dy, dx) um -> (N, 3) centres in um from the volume's first voxel
Detector = Callable[[np.ndarray, tuple[float, float, float]], np.ndarray]
WIENER_LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 0.3, 1.0, 3.0)
METHODS = ("deepz", "input", "wiener")


@torch.no_grad()
def refocus(loaded: LoadedModel, image: np.ndarray, planes_um: np.ndarray, batch: int = 8) -> np.ndarray:
    """(K, H, W) normalised virtual planes of one normalised (H, W) image (padded to a multiple of 2**depth)."""
    m = 2 ** loaded.manifest.architecture.depth
    h, w = image.shape
    ph, pw = -h % m, -w % m
    img = torch.from_numpy(np.pad(image, ((0, ph), (0, pw)), mode="reflect").astype(np.float32))
    out = []
    for k0 in range(0, len(planes_um), batch):
        d = torch.as_tensor(np.asarray(planes_um[k0:k0 + batch], np.float32) / loaded.manifest.axial_range_um)
        x = torch.stack([img.expand(len(d), *img.shape), d[:, None, None].expand(len(d), *img.shape)], dim=1)
        out.append(loaded.generator(x)[:, 0, :h, :w].numpy())
    return np.concatenate(out)


def _otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Optical transfer function of a centred PSF for an image of this shape (PSF normalised to sum 1)."""
    big = np.zeros(shape, np.float64)
    s = psf.shape[0]
    big[:s, :s] = psf / psf.sum()
    return np.fft.rfft2(np.roll(big, (-(s // 2), -(s // 2)), axis=(0, 1)))


def wiener_refocus(image: np.ndarray, psf_seen: np.ndarray, psf_focus: np.ndarray, lam: float) -> np.ndarray:
    """Classical refocus: Wiener-deconvolve the blur of the target plane, re-blur with the in-focus PSF."""
    pad = psf_seen.shape[0] // 2 + 1
    mean = float(image.mean())
    img = np.pad(image - mean, pad, mode="reflect")
    h_seen, h_focus = _otf(psf_seen, img.shape), _otf(psf_focus, img.shape)
    f = np.fft.rfft2(img) * h_focus * np.conj(h_seen) / (np.abs(h_seen) ** 2 + lam)
    return (np.fft.irfft2(f, s=img.shape)[pad:-pad, pad:-pad] + mean).astype(np.float32)


def _psf_at(stacks: FocalStacks, defocus: float) -> np.ndarray:
    return stacks.psf[int(np.abs(stacks.psf_defocus_um - defocus).argmin())]


def _merge_neurons(matches: list[MatchResult]) -> dict[str, Any]:
    """Pool matches over stacks: F1 from summed counts, error percentiles over all matched neurons."""
    n_true = sum(m.n_true for m in matches)
    n_det = sum(m.n_detected for m in matches)
    n_match = sum(len(m.pairs) for m in matches)
    err = np.concatenate([m.axial_error_um for m in matches])
    lat = np.concatenate([m.lateral_error_um for m in matches])
    ax = np.abs(err)
    return {
        "f1": 2 * n_match / (n_true + n_det) if n_true + n_det else 1.0,
        "precision": n_match / n_det if n_det else 0.0, "recall": n_match / n_true if n_true else 0.0,
        "n_true": n_true, "n_detected": n_det, "n_matched": n_match,
        "axial_error_median_um": float(np.median(ax)) if len(ax) else None,
        "axial_error_p90_um": float(np.percentile(ax, 90)) if len(ax) else None,
        "axial_bias_um": float(err.mean()) if len(ax) else None,
        "lateral_error_median_um": float(np.median(lat)) if len(lat) else None,
        "axial_errors_um": [round(float(e), 3) for e in err],
    }


def evaluate(
    loaded: LoadedModel, stacks: FocalStacks | str | Path, *, detector: Detector | None = None,
    plots_dir: Path | None = None, max_stacks: int | None = None, fov_margin_um: float = 2.0,
) -> dict[str, Any]:
    """Per refocus distance PSNR / SSIM / Pearson r of Deep-Z, the unrefocused input and Wiener; neuron F1."""
    st = stacks if isinstance(stacks, FocalStacks) else open_stacks(stacks)
    man = loaded.manifest
    target = st.target(man.modality)
    off, scale = man.normalisation.offset_adu, man.normalisation.scale_adu
    i0 = int(np.abs(st.z_um).argmin())
    z0 = float(st.z_um[i0])
    want = np.arange(-man.axial_range_um, man.axial_range_um + 1e-6, man.axial_step_um)
    j = np.array([int(np.abs(st.z_um - (z0 + d)).argmin()) for d in want])
    keep = np.abs(st.z_um[j] - (z0 + want)) < 1e-3
    planes, j = st.z_um[j[keep]] - z0, j[keep]
    use_wiener = st.psf is not None and man.modality == "widefield"
    h, w = st.shape
    px = st.pixel_size_um
    voxel = (float(np.median(np.diff(planes))) if len(planes) > 1 else 1.0, px, px)
    scores = {m: {k: [] for k in ("psnr", "ssim", "pearson")} for m in METHODS}
    neurons: dict[str, list] = {"deepz": [], "scanned_stack": [], "wiener": []}
    lambdas: list[float] = []
    n_stacks = st.n if max_stacks is None else min(st.n, max_stacks)
    example: dict[str, np.ndarray] = {}
    for n in range(n_stacks):
        image = (np.asarray(st.noisy[n, i0], np.float32) - off) / scale
        true = (np.asarray(target[n], np.float32)[j] - off) / scale
        virtual = refocus(loaded, image, planes)
        vols = {"deepz": virtual, "input": np.broadcast_to(image, true.shape)}
        if use_wiener:
            if not lambdas:  # tune lambda per distance on the first stack (generous to the baseline)
                lambdas = [max(WIENER_LAMBDAS, key=lambda lam: psnr(
                    wiener_refocus(image, _psf_at(st, d), _psf_at(st, 0.0), lam), true[k], 1.0))
                    for k, d in enumerate(planes)]
            vols["wiener"] = np.stack([wiener_refocus(image, _psf_at(st, d), _psf_at(st, 0.0), lam)
                                       for d, lam in zip(planes, lambdas)])
        rng = float(true.max() - true.min())
        for m, vol in vols.items():
            scores[m]["psnr"].append([psnr(vol[k], true[k], rng) for k in range(len(planes))])
            scores[m]["ssim"].append(ssim(vol, true, rng).tolist())
            scores[m]["pearson"].append([pearson(vol[k], true[k]) for k in range(len(planes))])
        if detector is not None and st.positions_um is not None:
            origin = np.array([z0 + planes[0], 0.0, 0.0])
            lo, hi = np.array([z0 + planes[0], fov_margin_um, fov_margin_um]), np.array(
                [z0 + planes[-1], (h - 1) * px - fov_margin_um, (w - 1) * px - fov_margin_um])
            truth = st.positions_um[n]
            truth = truth[np.all((truth >= lo) & (truth <= hi), axis=1)]
            scanned = (np.asarray(st.noisy[n], np.float32)[j] - off) / scale  # a real z-scan of the planes
            for m, vol in (("deepz", virtual), ("scanned_stack", scanned)) + (
                    (("wiener", vols["wiener"]),) if use_wiener else ()):
                found = detector(np.ascontiguousarray(vol), voxel) + origin
                found = found[np.all((found[:, 1:] >= lo[1:]) & (found[:, 1:] <= hi[1:]), axis=1)]
                neurons[m].append(match_points(found, truth, lateral_um=1.5, axial_um=2.0))
        if n == 0:
            example = {"input": image, "true": true, "deepz": virtual} | (
                {"wiener": vols["wiener"]} if use_wiener else {})
    per_distance: dict[str, Any] = {"dz_um": [round(float(d), 3) for d in planes]}
    for metric in ("psnr", "ssim", "pearson"):
        per_distance[metric] = {m: np.mean(scores[m][metric], axis=0).round(4).tolist()
                                for m in METHODS if scores[m][metric]}
    results: dict[str, Any] = {
        "model": {"name": man.name, "digest": loaded.digest, "modality": man.modality},
        "data": {"digest": st.digest, "n_stacks": n_stacks, "input_focus_um": z0, "source": st.attrs.get("source")},
        "per_distance": per_distance,
        "wiener_lambda": [float(x) for x in lambdas] or None,
        "neurons": {m: _merge_neurons(v) for m, v in neurons.items() if v},
    }
    results["targets"] = _targets(results)
    if plots_dir is not None:
        plot_evaluation(results, example, planes, Path(plots_dir))
    return results


def _targets(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's targets: beat both baselines at |dz| >= 1 um (SSIM, PSNR); axial error; F1 >= 0.9."""
    pd = results["per_distance"]
    far = [k for k, d in enumerate(pd["dz_um"]) if abs(d) >= 1 - 1e-6]
    fails = sorted({pd["dz_um"][k] for metric in ("psnr", "ssim") for k in far for b in ("input", "wiener")
                    if b in pd[metric] and pd[metric]["deepz"][k] <= pd[metric][b][k]})
    out: dict[str, Any] = {"beats_baselines_abs_dz_ge_1um": not fails, "dz_where_a_baseline_wins": fails}
    nz = results["neurons"].get("deepz")
    if nz and nz["axial_error_median_um"] is not None:
        out |= {"axial_median_le_0.5um": nz["axial_error_median_um"] <= 0.5,
                "axial_p90_le_1.5um": nz["axial_error_p90_um"] <= 1.5, "f1_ge_0.9": nz["f1"] >= 0.9}
    return out


def plot_evaluation(results: dict[str, Any], example: dict[str, np.ndarray], planes: np.ndarray,
                    out: Path) -> None:
    """metrics_vs_dz.png, examples.png (input / Wiener / Deep-Z / true at five distances), axial_error.png."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    pd = results["per_distance"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, metric in zip(axes, ("psnr", "ssim", "pearson")):
        for m, vals in pd[metric].items():
            ax.plot(pd["dz_um"], vals, "o-", ms=3, label=m)
        ax.set_xlabel("refocus distance dz (um)")
        ax.set_title(metric.upper() if metric != "pearson" else "Pearson r")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "metrics_vs_dz.png", dpi=90)
    plt.close(fig)
    if example:
        ks = [int(np.abs(planes - d).argmin()) for d in np.linspace(planes[0], planes[-1], 5)]
        rows = ["input", "wiener", "deepz", "true"] if "wiener" in example else ["input", "deepz", "true"]
        fig, axes = plt.subplots(len(rows), len(ks), figsize=(2.6 * len(ks), 2.6 * len(rows)))
        vmax = float(np.percentile(example["true"], 99.9))
        for r, name in enumerate(rows):
            for c, k in enumerate(ks):
                img = example[name] if name == "input" else example[name][k]
                axes[r, c].imshow(img, cmap="gray", vmin=0, vmax=vmax)
                axes[r, c].set_xticks([])
                axes[r, c].set_yticks([])
                if r == 0:
                    axes[r, c].set_title(f"dz = {planes[k]:+.1f} um", fontsize=9)
            axes[r, 0].set_ylabel(name)
        fig.tight_layout()
        fig.savefig(out / "examples.png", dpi=80)
        plt.close(fig)
    nz = results["neurons"]
    if nz:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for m, v in nz.items():
            if v["axial_errors_um"]:
                ax.hist(v["axial_errors_um"], bins=np.arange(-2, 2.01, 0.1), histtype="step",
                        label=f"{m} (F1 {v['f1']:.2f})")
        ax.set_xlabel("axial error (um)")
        ax.set_ylabel("matched neurons")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "axial_error.png", dpi=90)
        plt.close(fig)


def summary_lines(results: dict[str, Any]) -> list[str]:
    """A short human-readable summary."""
    pd = results["per_distance"]
    lines = [f"model {results['model']['name']} on {results['data']['n_stacks']} stacks"]
    for d in (-10, -5, -2, -1, 0, 1, 2, 5, 10):
        if d in pd["dz_um"]:
            k = pd["dz_um"].index(d)
            parts = [f"{m} {pd['psnr'][m][k]:.1f}dB/{pd['ssim'][m][k]:.3f}" for m in pd["psnr"]]
            lines.append(f"  dz {d:+3d} um  PSNR/SSIM  " + "  ".join(parts))
    for m, v in results["neurons"].items():
        lines.append(f"  neurons {m}: F1 {v['f1']:.3f} (P {v['precision']:.2f} R {v['recall']:.2f}), axial error "
                     f"median {v['axial_error_median_um']} p90 {v['axial_error_p90_um']} um")
    lines.append(f"  targets: {results['targets']}")
    return lines


def store_evaluation(model_dir: str | Path, results: dict[str, Any]) -> None:
    """Write a compact copy of the results (no per-neuron lists) into the model's manifest.json."""
    model_dir = Path(model_dir)
    manifest = load_manifest(model_dir)
    compact = json.loads(json.dumps(results))
    for section in (compact.get("neurons", {}), compact.get("targettrack", {}).get("neurons", {})):
        for v in section.values():
            v.pop("axial_errors_um", None)
    write_manifest(model_dir, manifest.model_copy(update={"evaluation": compact}))
