"""`deepz track`: re-detect and globally re-link a recording's stored volumes into a tracks store."""

from __future__ import annotations

import sys
from pathlib import Path

from deepz.config import ConfigError


def track_recording(
    source: Path, out: Path, *, max_distance_um: float, max_gap: int, device: str | None, overwrite: bool,
    cluster: str | None = None,
) -> dict[str, object]:
    """Re-detect and globally re-link every stored volume of `source`; write tracks to a new store.

    With ``cluster`` (local[:N] or a scheduler address) volumes are detected on Dask workers; linking stays here.
    """
    import numpy as np
    from tqdm import tqdm

    from storage import RecordingReader, RecordingWriter
    from storage.output_path import check_output
    from track.offline import OfflineConfig, link_measurements, track_volumes

    check_output(out, overwrite=overwrite, inputs=(source,))  # before minutes of detection
    reader = RecordingReader(source)
    if not reader.has_volumes or len(reader.volume_indices) == 0 or reader.planes_um is None:
        raise ConfigError(
            f"{source} holds no volumes to track; run `deepz replay {source}` to compute them first."
        )
    planes = reader.planes_um
    dz = float(np.mean(np.diff(planes))) if len(planes) > 1 else 1.0
    voxel = (dz, reader.volume_pixel_size_um, reader.volume_pixel_size_um)
    origin = (float(planes[0]), 0.0, 0.0)
    indices = reader.volume_indices
    config = OfflineConfig(max_distance_um=max_distance_um, max_gap=max_gap)
    if cluster is not None:
        from deepz.cluster.connect import connect, describe, local_torch_threads, parse_cluster
        from deepz.cluster.track import TrackGeometry, measure_on_cluster

        spec = parse_cluster(cluster)
        threads = local_torch_threads(spec.local_workers()) if spec.local else None
        geometry = TrackGeometry(voxel, origin, device, threads)
        with connect(spec) as client, tqdm(total=len(indices), desc="detect", unit="vol") as bar:
            print(describe(client), file=sys.stderr)
            detections, intensities = measure_on_cluster(client, source.resolve(), indices, geometry, bar.update)
        table = link_measurements(detections, intensities, config)
    else:
        with tqdm(total=len(indices), desc="detect", unit="vol") as bar:
            table = track_volumes(
                (reader.volume(int(t)) for t in indices),
                voxel,
                origin_um=origin,
                config=config,
                device=device,
                progress=lambda _: bar.update(1),
            )
    attrs = {
        "tracked_from": str(source),
        "tracking": {
            "mode": "offline global LAP (laptrack)",
            "max_distance_um": max_distance_um,
            "max_gap": max_gap,
            "voxel_um": voxel,
            "origin_um": origin,
        },
    }
    with RecordingWriter(
        out,
        frame_shape=reader.frame_shape,
        pixel_size_um=reader.pixel_size_um,
        frame_interval_s=reader.frame_interval_s,  # the tracks' times (deepz export, napari)
        planes_um=None,
        volume_every=0,
        attrs=attrs,
        overwrite=overwrite,
        inputs=(source,),
    ) as writer:
        for k, t in enumerate(indices):
            ids, pos, intensity, dff = table.at(k)
            writer.write_tracks(int(t), ids, pos, intensity, dff)
    return {"volumes": len(indices), "tracks": len(np.unique(table.ids)), "rows": len(table.ids)}
