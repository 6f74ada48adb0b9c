"""Point-spread functions (psfmodels, Gibson-Lanni / vectorial) and per-nucleus defocus stamps, cached."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.fft

from acquire.sim.config import OpticsConfig
from acquire.sim.sample import ELLIPSOID_ASPECT

_ENERGY_KEPT = 0.99  # stamps are cropped to the square holding this fraction of their light
_MARGIN_UM = 2.0  # PSF planes computed beyond the stamp range so that nuclei (<= 1.5 um deep) convolve fully
_lock = threading.RLock()
log = logging.getLogger(__name__)
_memory: dict[str, object] = {}


def cache_dir() -> Path:
    """Where computed PSFs are kept between runs ($DEEPZ_CACHE_DIR, else ~/.cache/deepz-live)."""
    root = os.environ.get("DEEPZ_CACHE_DIR") or Path.home() / ".cache" / "deepz-live"
    return Path(root) / "psf"


@dataclass(frozen=True)
class StampBank:
    """Pre-rendered images of one nucleus per size class and defocus, each cropped and centred.

    ``stamps[c][j]`` is the (2r+1, 2r+1) float32 image, in photo-electrons per electron emitted, of a
    nucleus of class ``c`` whose centre lies ``defocus_um[j]`` above the focal plane (sample z - focus z).
    """

    defocus_um: np.ndarray
    stamps: tuple[tuple[np.ndarray, ...], ...]

    def plane_index(self, defocus_um: np.ndarray) -> np.ndarray:
        """Index of the nearest stamp plane; defocus beyond the range uses the outermost plane."""
        step = self.defocus_um[1] - self.defocus_um[0]
        j = np.rint((np.asarray(defocus_um) - self.defocus_um[0]) / step).astype(np.int64)
        return np.clip(j, 0, len(self.defocus_um) - 1)


def _psf_params(optics: OpticsConfig) -> dict[str, float]:
    return dict(
        NA=optics.na, ns=optics.sample_index, ni=optics.immersion_index, ni0=optics.immersion_index,
        ng=optics.coverslip_index, ng0=optics.coverslip_index,
        tg=optics.coverslip_um, tg0=optics.coverslip_um,
        ti0=optics.working_distance_um,
    )  # fmt: skip


def _cached(key: dict, compute) -> np.ndarray:
    """Memoise an expensive array in memory and on disk under a hash of ``key``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
    with _lock:
        if digest in _memory:
            return _memory[digest]  # type: ignore[return-value]
        path = cache_dir() / f"{digest}.npy"
        try:
            arr = np.load(path)
        except (OSError, ValueError):
            log.info("computing %s (once; cached in %s)", key["kind"], path.parent)
            arr = compute()
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
            np.save(tmp, arr)
            os.replace(tmp, path)
        _memory[digest] = arr
        return arr


def _raw_psf(optics: OpticsConfig, focal_um: np.ndarray, nx: int, wavelength_um: float) -> np.ndarray:
    """psfmodels PSF of a point at ``depth_um`` for focal planes ``focal_um`` (from the coverslip)."""
    import psfmodels

    key = dict(kind="psf", params=_psf_params(optics), model=optics.psf_model, pz=optics.depth_um,
               wvl=wavelength_um, dxy=optics.pixel_size_um, nx=nx,
               zv=[round(float(z), 6) for z in focal_um])  # fmt: skip

    def compute() -> np.ndarray:
        psf = psfmodels.make_psf(
            focal_um, nx, dxy=optics.pixel_size_um, pz=optics.depth_um, wvl=wavelength_um,
            model=optics.psf_model, normalize=False, **_psf_params(optics),
        )  # fmt: skip
        return psf.astype(np.float32)

    return _cached(key, compute)


def best_focus_um(optics: OpticsConfig) -> float:
    """Nominal focal position (from the coverslip) where a point at ``depth_um`` is sharpest.

    With a refractive-index mismatch this differs from ``depth_um`` (focal shift); defocus counts from it.
    """
    scale = max(optics.depth_um, 1.0)
    zv = optics.depth_um + np.arange(-0.4 * scale, 0.1 * scale + 1e-9, 0.01)
    peak = _raw_psf(optics, zv, 15, optics.emission_um).max(axis=(1, 2))
    return float(zv[int(np.argmax(peak))])


def psf_stack(optics: OpticsConfig, defocus_um: np.ndarray, wavelength_um: float, nx: int) -> np.ndarray:
    """(Z, nx, nx) PSF of a point ``defocus_um`` above the focal plane (positive = deeper into the sample)."""
    return _raw_psf(optics, best_focus_um(optics) - np.asarray(defocus_um), nx, wavelength_um)


def _ellipsoid(diameter_um: float, px_um: float, dz_um: float, supersample: int = 5) -> np.ndarray:
    """Voxelised uniform ellipsoid (z, y, x) with partial-volume weights, normalised to sum 1."""
    semi = np.array(ELLIPSOID_ASPECT) * diameter_um / 2
    nz = int(np.ceil(semi[0] / dz_um))
    nxy = int(np.ceil(semi[1:].max() / px_um)) + 1
    z = np.arange(-nz, nz + 1) * dz_um
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    yx = (np.arange(-nxy, nxy + 1)[:, None] + sub[None, :]).ravel() * px_um
    inside = (z[:, None, None] / semi[0]) ** 2 + (yx[None, :, None] / semi[1]) ** 2 + (
        yx[None, None, :] / semi[2]
    ) ** 2 <= 1
    n = 2 * nxy + 1
    vol = inside.reshape(len(z), n, supersample, n, supersample).mean(axis=(2, 4))
    return vol / vol.sum()


def _crop(plane: np.ndarray) -> np.ndarray:
    """Smallest centred square holding ``_ENERGY_KEPT`` of the plane's light, rescaled to carry all of it."""
    c = plane.shape[0] // 2
    ring = np.abs(np.arange(plane.shape[0]) - c)
    chebyshev = np.maximum(ring[:, None], ring[None, :])  # square "radius" of every pixel
    energy = np.cumsum(np.bincount(chebyshev.ravel(), weights=plane.ravel().astype(np.float64)))
    r = max(2, int(np.searchsorted(energy, _ENERGY_KEPT * energy[-1])))
    kept = plane[c - r : c + r + 1, c - r : c + r + 1]
    return np.ascontiguousarray(kept * (energy[-1] / kept.sum(dtype=np.float64)), dtype=np.float32)


def build_stamps(optics: OpticsConfig, class_diameters_um: np.ndarray, modality: str) -> StampBank:
    """Defocus stamps of each nucleus size class (see ``_compute_stamps``), memoised in memory and on disk."""
    if modality not in ("widefield", "confocal"):
        raise ValueError(f"Unknown modality {modality!r}; use 'widefield' or 'confocal'.")
    diameters = [round(float(d), 6) for d in class_diameters_um]
    key = dict(
        kind="stamps",
        version=2,
        kept=_ENERGY_KEPT,
        optics=optics.model_dump(),
        diameters=diameters,
        modality=modality,
    )
    n_planes = 2 * int(round(optics.stamp_range_um / optics.stamp_step_um)) + 1

    def compute() -> np.ndarray:
        bank = _compute_stamps(optics, np.asarray(diameters), modality)
        sizes = np.array([p.shape[0] for c in bank.stamps for p in c], np.float32)
        return np.concatenate(
            [bank.defocus_um.astype(np.float32), sizes, *[p.ravel() for c in bank.stamps for p in c]]
        )

    flat = _cached(key, compute)
    defocus, sizes = flat[:n_planes].astype(np.float64), flat[n_planes : n_planes * (1 + len(diameters))]
    offsets = n_planes * (1 + len(diameters)) + np.concatenate([[0], np.cumsum(sizes.astype(np.int64) ** 2)])
    planes = [flat[a:b].reshape(int(n), int(n)) for a, b, n in zip(offsets[:-1], offsets[1:], sizes)]
    stamps = tuple(tuple(planes[c * n_planes : (c + 1) * n_planes]) for c in range(len(diameters)))
    return StampBank(defocus_um=np.round(defocus, 6), stamps=stamps)


def _compute_stamps(optics: OpticsConfig, class_diameters_um: np.ndarray, modality: str) -> StampBank:
    """Defocus stamps of each nucleus size class for "widefield" or "confocal" imaging.

    Widefield: every plane of the PSF carries all the light (flux is conserved through defocus), so each stamp
    sums to 1. Confocal: excitation x emission PSF (infinitely small pinhole), scaled so the in-focus stamp
    sums to 1; out-of-focus light falls off (optical sectioning).
    """
    step, rng_um = optics.stamp_step_um, optics.stamp_range_um
    n_half = int(round(rng_um / step))
    n_margin = int(np.ceil(_MARGIN_UM / step))
    defocus = np.arange(-n_half - n_margin, n_half + n_margin + 1) * step
    half_angle = np.arcsin(min(optics.na / optics.sample_index, 0.95))
    nx = 2 * int(np.ceil((rng_um + _MARGIN_UM) * np.tan(half_angle) / optics.pixel_size_um + 8)) + 1
    em = psf_stack(optics, defocus, optics.emission_um, nx).astype(np.float64)
    if modality == "widefield":
        psf = em / em.sum(axis=(1, 2), keepdims=True)
    else:
        ex = psf_stack(optics, defocus, optics.excitation_um, nx).astype(np.float64)
        psf = (ex / ex.max()) * (em / em.sum(axis=(1, 2)).max())
    centre = slice(n_margin, n_margin + 2 * n_half + 1)
    classes = []  # stamp planes per size class
    kernels = [_ellipsoid(float(d), optics.pixel_size_um, step) for d in class_diameters_um]
    pad = np.max([k.shape for k in kernels], axis=0)
    fshape = [scipy.fft.next_fast_len(int(a + b - 1), real=True) for a, b in zip(psf.shape, pad)]
    with scipy.fft.set_workers(os.cpu_count() or 1):
        psf_f = scipy.fft.rfftn(psf, fshape)  # one transform of the PSF serves every size class
        for kernel in kernels:
            full = scipy.fft.irfftn(psf_f * scipy.fft.rfftn(kernel, fshape), fshape)
            # "same"-size crop centred on the PSF, then the stamp range
            lo = [k // 2 for k in kernel.shape]
            vol = full[tuple(slice(o, o + n) for o, n in zip(lo, psf.shape))][centre]
            classes.append(_planes(vol, modality, n_half))
    return StampBank(defocus_um=defocus[centre], stamps=tuple(classes))


def _planes(vol: np.ndarray, modality: str, n_half: int) -> tuple[np.ndarray, ...]:
    """Normalise one size class's stamp volume (see ``_compute_stamps``) and crop its planes."""
    vol = np.clip(vol, 0, None)
    if modality == "widefield":
        vol /= vol.sum(axis=(1, 2), keepdims=True)
    else:
        vol /= vol[n_half].sum()
    return tuple(_crop(p) for p in vol)
