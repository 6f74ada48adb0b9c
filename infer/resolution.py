"""Image resolution measures: decorrelation analysis of 2D images, FWHM of peaks and of isolated nuclei.

Decorrelation analysis follows Descloux, Grussmayer & Radenovic, Nature Methods 16, 918 (2019): the
correlation of an image's Fourier transform with its own phase-only version, restricted to a disc of
radius r (r = 1 at Nyquist), peaks at the highest frequency that still carries signal above noise;
repeated on a series of high-pass filtered spectra, the highest significant peak k_c gives the
resolution 2 * pixel / k_c.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

_APODISATION_PX = 20
_N_RADII = 50
_N_FILTERS = 10
_MIN_PEAK_AMPLITUDE = 0.05
_PEAK_SIGNIFICANCE = 1e-3
_SECTOR_HALF_ANGLE_DEG = 30.0
_MIN_RELATIVE_PROMINENCE = 0.02


def _apodise(image: np.ndarray, width: int) -> np.ndarray:
    """Mean-subtracted image with a cosine taper of `width` pixels at its edges (no edge-crossing streaks)."""
    out = image - image.mean()
    for axis, n in enumerate(out.shape):
        w = min(width, n // 4)
        if w < 1:
            continue
        ramp = (1 - np.cos(np.pi * (np.arange(w) + 0.5) / w)) / 2
        taper = np.ones(n)
        taper[:w], taper[n - w :] = ramp, ramp[::-1]
        shape = [1, 1]
        shape[axis] = n
        out = out * taper.reshape(shape)
    return out


def _decorrelation_curve(
    amplitude: np.ndarray, radius: np.ndarray, order: np.ndarray, radii: np.ndarray
) -> np.ndarray:
    """d(r) = sum_{R<r} |I| / (||I||_{R<1} sqrt(#{R<r})), the correlation of I with its phase-only version."""
    a = amplitude[order]
    norm = np.sqrt(np.sum(a * a))
    if norm == 0:
        return np.zeros(len(radii))
    cum = np.concatenate([[0.0], np.cumsum(a)])
    count = np.searchsorted(radius[order], radii, side="left")
    return np.where(count > 0, cum[count] / (norm * np.sqrt(np.maximum(count, 1))), 0.0)


def _curve_peak(d: np.ndarray) -> tuple[int, float]:
    """Index and amplitude of the last significant local maximum of d (a maximum at r = 1 is not a peak)."""
    t = d.copy()
    ind = int(np.argmax(t))
    while ind == len(t) - 1:
        t = t[:-1]
        if len(t) == 0:
            return 0, 0.0
        ind = int(np.argmax(t))
        if t[ind] - d[ind:].min() > _PEAK_SIGNIFICANCE:
            break
        t[ind] = d[ind:].min()
        ind = len(t) - 1
    return ind, float(t[ind])


def decorrelation_resolution_um(image: np.ndarray, pixel_size_um: float, *, axis: int | None = None) -> float:
    """Resolution (um) of a 2D image by decorrelation analysis; NaN when no peak is found (noise only, or
    structure up to the Nyquist frequency: sampling-limited).

    With `axis` (0 or 1), only frequencies within 30 degrees of that axis count (sectorial analysis), which
    gives the resolution along that axis, e.g. axial and lateral resolution from one xz slice.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or min(image.shape) < 8:
        raise ValueError(f"decorrelation analysis needs a 2D image of at least 8x8 pixels, got {image.shape}")
    if not np.all(np.isfinite(image)):
        raise ValueError("image holds NaN or inf values; crop or fill them before measuring resolution")
    if pixel_size_um <= 0:
        raise ValueError(f"pixel_size_um must be > 0, got {pixel_size_um}")
    spectrum = np.abs(np.fft.fft2(_apodise(image, _APODISATION_PX)))
    fy = 2 * np.fft.fftfreq(image.shape[0])[:, None]  # 1 at Nyquist
    fx = 2 * np.fft.fftfreq(image.shape[1])[None, :]
    radius = np.sqrt(fy**2 + fx**2).ravel()
    inside = radius < 1
    if axis is not None:
        if axis not in (0, 1):
            raise ValueError(f"axis must be 0, 1 or None, got {axis}")
        along = np.abs(np.broadcast_to(fy if axis == 0 else fx, spectrum.shape)).ravel()
        inside &= along >= np.cos(np.deg2rad(_SECTOR_HALF_ANGLE_DEG)) * radius
    amplitude, radius = spectrum.ravel()[inside], radius[inside]
    order = np.argsort(radius, kind="stable")
    r2 = radius**2

    def peak(radii: np.ndarray, g: float | None) -> tuple[float, float]:
        weights = amplitude if g is None else amplitude * (1 - np.exp(-2 * g * g * r2))
        ind, amp = _curve_peak(_decorrelation_curve(weights, radius, order, radii))
        return float(radii[ind]), amp

    radii = np.linspace(0, 1, _N_RADII)
    k0, a0 = peak(radii, None)
    g_max = 2 / k0 if k0 > 0 else float(max(image.shape))
    gs = np.concatenate([[image.shape[0] / 4], np.geomspace(g_max, 0.15, _N_FILTERS)])
    found = [(k0, a0)] + [peak(radii, g) for g in gs]
    # second pass: finer high-pass series and radii around the highest peak of the first
    kcs = [k for k, _ in found[1:]]
    best = int(np.flatnonzero(np.array(kcs) == max(kcs))[-1])
    lo, hi = (max(best - 1, 0), max(best, 1)) if best < len(gs) - 1 else (len(gs) - 2, len(gs) - 1)
    fine_gs = np.geomspace(gs[lo], gs[hi], _N_FILTERS)
    step = radii[1] - radii[0]
    fine_radii = np.linspace(max(kcs[best] - step, 0), min(kcs[best] + 0.4, 1), _N_RADII)
    found += [peak(fine_radii, g) for g in fine_gs]
    significant = [k for k, a in found if a >= _MIN_PEAK_AMPLITUDE and k > 0]
    return 2 * pixel_size_um / max(significant) if significant else float("nan")


def _fwhm_at(profile: np.ndarray, peak: int, spacing_um: float) -> float:
    """FWHM around sample `peak` of a profile: background = its minimum, the maximum refined by a parabola
    through the top three samples, half-maximum crossings linearly interpolated."""
    p = profile - profile.min()
    if p[peak] <= 0 or peak == 0 or peak == len(p) - 1:
        return float("nan")
    a, b, c = p[peak - 1 : peak + 2]
    curvature = a - 2 * b + c
    top = b - (c - a) ** 2 / (8 * curvature) if curvature < 0 else b  # vertex of the parabola
    half = top / 2
    below_left = np.flatnonzero(p[:peak] < half)
    below_right = np.flatnonzero(p[peak + 1 :] < half)
    if len(below_left) == 0 or len(below_right) == 0:
        return float("nan")
    i = below_left[-1]  # p[i] < half <= p[i + 1]
    left = i + (half - p[i]) / (p[i + 1] - p[i])
    j = peak + 1 + below_right[0]  # p[j - 1] >= half > p[j]
    right = j - 1 + (p[j - 1] - half) / (p[j - 1] - p[j])
    return float((right - left) * spacing_um)


def fwhm_um(profile: np.ndarray, spacing_um: float) -> float:
    """Full width at half maximum of the highest peak of a 1D profile; NaN when it has no clean peak."""
    profile = np.asarray(profile, dtype=np.float64)
    if profile.ndim != 1:
        raise ValueError(f"fwhm_um needs a 1D profile, got shape {profile.shape}")
    if len(profile) < 3 or not np.all(np.isfinite(profile)):
        return float("nan")
    return _fwhm_at(profile, int(np.argmax(profile)), spacing_um)


def nucleus_fwhm_um(
    data: np.ndarray,
    centres_px: np.ndarray,
    spacing_um: float | Sequence[float],
    *,
    axes: Sequence[int] | None = None,
    isolation_um: float = 5.0,
) -> np.ndarray:
    """(N, len(axes)) FWHM (um) along each axis through each nucleus centre; NaN if not isolated or no peak.

    A nucleus counts as isolated when no other centre lies within `isolation_um`; its profile spans
    +/- `isolation_um` around the centre, its peak must lie within the central half of that span and rise
    above the profile's minimum by at least 3 noise sigmas (from pixel differences) and 2% of the data range.
    """
    data = np.asarray(data, dtype=np.float64)
    if data.ndim not in (2, 3):
        raise ValueError(f"nucleus_fwhm_um needs 2D or 3D data, got shape {data.shape}")
    centres = np.asarray(centres_px, dtype=np.float64).reshape(-1, data.ndim)
    spacing = np.broadcast_to(np.asarray(spacing_um, dtype=np.float64), (data.ndim,))
    axes = tuple(range(data.ndim)) if axes is None else tuple(axes)
    if any(not 0 <= a < data.ndim for a in axes):
        raise ValueError(f"axes {axes} out of range for {data.ndim}D data")
    out = np.full((len(centres), len(axes)), np.nan)
    valid = np.all(np.isfinite(centres), axis=1)
    if valid.sum() == 0:
        return out
    noise = 1.4826 * np.median(np.abs(np.diff(data, axis=-1))) / np.sqrt(2)
    lo_hi = np.percentile(data, [0.1, 99.9])
    min_prominence = max(3 * noise, _MIN_RELATIVE_PROMINENCE * (lo_hi[1] - lo_hi[0]))
    positions = centres[valid] * spacing
    if len(positions) > 1:
        nearest = cKDTree(positions).query(positions, k=2)[0][:, 1]
    else:
        nearest = np.full(1, np.inf)
    isolated = np.zeros(len(centres), bool)
    isolated[np.flatnonzero(valid)] = nearest >= isolation_um
    for n in np.flatnonzero(isolated):
        idx = np.round(centres[n]).astype(int)
        if np.any(idx < 0) or np.any(idx >= data.shape):
            continue
        for col, axis in enumerate(axes):
            reach = max(round(isolation_um / spacing[axis]), 2)
            lo, hi = max(idx[axis] - reach, 0), min(idx[axis] + reach + 1, data.shape[axis])
            line = list(idx)
            line[axis] = slice(lo, hi)
            profile = data[tuple(line)]
            centre = idx[axis] - lo
            core = max(reach // 2, 1)
            c_lo, c_hi = max(centre - core, 0), min(centre + core + 1, len(profile))
            peak = c_lo + int(np.argmax(profile[c_lo:c_hi]))
            if peak in (c_lo, c_hi - 1) or profile[peak] - profile.min() < min_prominence:
                continue  # still rising at the edge of the central region, or too faint: no peak here
            out[n, col] = _fwhm_at(profile, peak, spacing[axis])
    return out
