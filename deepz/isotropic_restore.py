"""`deepz isotropic`: train (or load) Self-Net and restore every volume of a source into an OME-Zarr image."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional


def restore_source(
    source_path: Path,
    out: Path,
    *,
    voxel_um: Optional[str] = None,
    axes: Optional[str] = None,
    channel: Optional[int] = None,
    z_step_um: Optional[float] = None,
    steps: Optional[int] = None,
    train_volumes: int = 1,
    model_dir: Optional[Path] = None,
    save_model_dir: Optional[Path] = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Train (or load) Self-Net, restore every input volume into an OME-Zarr image; returns a summary."""
    import numpy as np
    from tqdm import tqdm

    from infer.isotropic import IsotropicConfig, IsotropicModel, restore_volume, train_isotropic
    from infer.isotropic.errors import IsotropicInputError
    from deepz.isotropic_io import cast, create_output, open_source, output_dtype, parse_voxel
    from storage.output_path import check_output

    if model_dir is not None and steps is not None:
        raise IsotropicInputError("--steps trains a new model; leave it out when reusing one with --model")
    source = open_source(source_path, voxel_um=parse_voxel(voxel_um), axes=axes, channel=channel)
    check_output(Path(out), overwrite=overwrite, inputs=(source_path,))  # fail before minutes of training
    t0 = time.perf_counter()
    if model_dir is not None:
        model = IsotropicModel.load(model_dir)
    else:
        config = IsotropicConfig(**({} if steps is None else {"steps": steps}))
        volumes = [source.read(i) for i in source.training_indices(train_volumes)]
        model = train_isotropic(volumes, source.voxel_um, config, progress=progress)
    train_s = time.perf_counter() - t0
    if save_model_dir is not None:
        model.save(save_model_dir)
    dtype = output_dtype(source.dtype)
    volume0 = source.read(0)
    t1 = time.perf_counter()
    first, z_step = restore_volume(model, volume0, source.voxel_um, z_step_um=z_step_um, progress=progress)
    dx = source.voxel_um[2]
    attrs = {
        "source": str(source_path),
        "input_voxel_um": list(source.voxel_um),
        "voxel_um": [z_step, dx, dx],
        "frame_indices": source.frame_indices,
        "method": model.manifest().details["method"],
        "degradation": model.degradation.to_dict(),
        "model": model.manifest().model_dump(mode="json", exclude={"evaluation"}),
        "source_attrs": source.attrs,
    }
    array = create_output(
        out,
        n_volumes=source.count,
        shape=first.shape,
        dtype=dtype,
        voxel_um=(z_step, dx, dx),
        z0_um=source.z0_um,
        attrs=attrs,
        overwrite=overwrite,
        inputs=(source_path,),
        time_axis_s=source.time_axis_s,
    )
    array[0] = cast(first, dtype)
    for i in tqdm(
        range(1, source.count),
        desc="restore volumes",
        unit="volume",
        initial=1,
        total=source.count,
        disable=not progress or source.count == 1,
        dynamic_ncols=True,
    ):
        array[i] = cast(
            restore_volume(model, source.read(i), source.voxel_um, z_step_um=z_step, progress=False)[0], dtype
        )
    restore_s = time.perf_counter() - t1
    return {
        "out": str(out),
        "volumes": source.count,
        "shape_in": list(volume0.shape),
        "shape_out": list(first.shape),
        "voxel_in_um": list(source.voxel_um),
        "voxel_out_um": [z_step, dx, dx],
        "degradation_sigma_um": model.degradation.sigma_um,
        "train_seconds": train_s,
        "restore_seconds_per_volume": restore_s / max(source.count, 1),
        "dtype": str(np.dtype(dtype)),
    }
