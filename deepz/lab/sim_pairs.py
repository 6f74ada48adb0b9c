"""Super-resolution pairs rendered by the simulator: the low-resolution microscope of each pair kind looking at
the same worm as the high-resolution one, written as a pairs store (infer.superres.pairs).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from deepz.lab import scaffold
from infer.data import Target
from infer.superres.pairs import (
    MODALITY,
    PairFileError,
    PairKind,
    PairsRecipe,
    RegisteredPairs,
    open_pairs,
    write_pairs,
)

LOW_NA = 0.4  # the "na" pair: a 10x/0.4 NA objective whose camera pixels are UPSAMPLE times larger
UPSAMPLE = {"na": 2, "confocal": 1}
PSF_SIZE = 33  # pixels (target grid) of the stored input PSF
BEAD_DIAMETER_UM = 0.2  # sub-resolution beads: their images are the PSF, so their FWHM is the resolution


def collection_efficiency(na: float, immersion_index: float = 1.0) -> float:
    """Fraction of isotropic emission an objective collects: (1 - cos(asin(NA/n))) / 2."""
    return (1 - math.cos(math.asin(na / immersion_index))) / 2


def input_sim_config(target: Any, kind: PairKind) -> Any:
    """The simulator of a pair kind's low-resolution microscope, looking at the same worm as ``target``.

    "na": a 10x/0.4 NA objective with pixels twice as large on half as many of them (so the worm stays
    centred on the same field); it collects (1-cos) x fewer photons per nucleus while each pixel gathers
    4x the area of background. "confocal": the wide-field microscope of the target itself.
    """
    if kind == "confocal":
        return target
    u = UPSAMPLE[kind]
    h, w = target.camera.shape
    if h % u or w % u:
        raise ValueError(f"target shape {h}x{w} must be a multiple of {u} for the {kind!r} pair")
    light = collection_efficiency(LOW_NA, target.optics.immersion_index) / collection_efficiency(
        target.optics.na, target.optics.immersion_index)
    return target.model_copy(update={
        "optics": target.optics.model_copy(update={
            "na": LOW_NA, "magnification": target.optics.magnification / u,
            "pixel_size_um": target.optics.pixel_size_um * u}),
        "camera": target.camera.model_copy(update={
            "shape": (h // u, w // u), "background_e": target.camera.background_e * u * u * light}),
        "worm": target.worm.model_copy(update={"brightness_e": target.worm.brightness_e * light}),
    })


def input_psf(input_config: Any, pixel_size_um: float, size: int = PSF_SIZE) -> np.ndarray:
    """In-focus PSF (sum 1) of the input microscope sampled on the target grid: Richardson-Lucy's kernel."""
    from acquire.sim.optics import psf_stack

    optics = input_config.optics.model_copy(update={"pixel_size_um": pixel_size_um})
    psf = psf_stack(optics, np.zeros(1), optics.emission_um, size)[0].astype(np.float64)
    return (psf / psf.sum()).astype(np.float32)


def render_pairs(out: str | Path, *, kind: PairKind, n: int, seed: int, shape: tuple[int, int] = (256, 256),
                 planes_per_worm: int = 3, focus_range_um: float = 4.0, bead_every: int = 0,
                 sim_config: Any = None, progress: bool = True) -> Path:
    """Render n simulated worms x planes_per_worm focus planes as registered pairs (see the module doc).

    With bead_every = k, every k-th worm's nuclei are sub-resolution beads (BEAD_DIAMETER_UM) at the same
    places: point-like objects that teach and measure resolution (k = 1: beads only).
    """
    from tqdm import tqdm

    from acquire.sim import WormSimulator

    base = scaffold.sim_config(shape, base=sim_config)
    modality = MODALITY[kind]
    rng = np.random.default_rng(seed)
    inputs, targets, focus, nuclei, worms, times, diameters = [], [], [], [], [], [], []
    beads = base.worm.model_copy(update={"nucleus_diameter_um": (BEAD_DIAMETER_UM, BEAD_DIAMETER_UM)})
    for i in tqdm(range(n), desc=f"render {kind} pairs", disable=not progress):
        is_beads = bead_every > 0 and i % bead_every == bead_every - 1
        target_cfg = base.model_copy(update={"seed": seed * 1000 + i} | ({"worm": beads} if is_beads else {}))
        target_sim, input_sim = WormSimulator(target_cfg), WormSimulator(input_sim_config(target_cfg, kind))
        t = float(rng.uniform(0, base.worm.motion.period_s))
        truth = target_sim.truth(t)
        for z in rng.uniform(-focus_range_um, focus_range_um, planes_per_worm):
            inputs.append(input_sim.render(t, float(z), noise=True))
            targets.append(target_sim.render(t, float(z), noise=False, modality=modality))
            pos = truth.positions_um
            nuclei.append(np.column_stack([pos[:, 1:] / target_sim.pixel_size_um, pos[:, 0] - z]))
            focus.append(float(z))
            diameters.append(float(max(target_cfg.worm.nucleus_diameter_um)))
            worms.append(i)
            times.append(t)
    input_cfg = input_sim_config(base, kind)
    attrs = {
        "kind": kind, "modality": modality, "seed": seed, "worm": worms, "t_s": times,
        "nucleus_diameter_um": diameters, "bead_every": bead_every,
        "source": "acquire.sim.WormSimulator",
        "optics": scaffold.optics_of(base.optics).model_dump(),
        "input_optics": scaffold.optics_of(input_cfg.optics).model_dump(),
        "sim_config": base.model_dump(mode="json"), "input_sim_config": input_cfg.model_dump(mode="json"),
    }
    return write_pairs(out, np.stack(inputs), np.stack(targets), pixel_size_um=base.optics.pixel_size_um,
                       offset_adu=base.camera.offset_adu, focus_z_um=np.asarray(focus), nuclei=nuclei,
                       psf=input_psf(input_cfg, base.optics.pixel_size_um), attrs=attrs)


def ensure_pairs(stacks: str, recipe: PairsRecipe | None, *, pixel_size_um: float, target: Target,
                 progress: bool = True) -> RegisteredPairs:
    """Open the pairs at `stacks`, rendering them from `recipe` first when they do not exist yet."""
    path = Path(stacks)
    if recipe is not None and not path.exists():
        if MODALITY[recipe.kind] != target:
            raise PairFileError(f"pair kind {recipe.kind!r} makes {MODALITY[recipe.kind]} targets but the recipe "
                                f"trains for {target!r}; set target = {MODALITY[recipe.kind]!r}.")
        render_pairs(path, kind=recipe.kind, n=recipe.n, seed=recipe.seed, shape=recipe.shape,
                     planes_per_worm=recipe.planes_per_worm, focus_range_um=recipe.focus_range_um,
                     bead_every=recipe.bead_every, progress=progress)
    return open_pairs(path, pixel_size_um=pixel_size_um, modality=target)
