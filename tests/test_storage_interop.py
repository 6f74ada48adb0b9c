"""A recording opens in standard tools: NGFF 0.5 schema validation, ome-zarr-py's reader and plain zarr."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from storage import FrameRecord, RecordingWriter
from storage.synthetic import blob_volume

PLANES = np.linspace(-6.0, 6.0, 4)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path_factory.mktemp("interop") / "rec.zarr"
    frames = np.stack([blob_volume((64, 96), n_blobs=10, seed=t) for t in range(12)])
    volume = blob_volume((4, 64, 96), n_blobs=10, seed=99)
    with RecordingWriter(
        path,
        frame_shape=(64, 96),
        pixel_size_um=0.325,
        planes_um=PLANES,
        volume_every=1,
        frame_interval_s=0.01,
    ) as writer:
        for t, frame in enumerate(frames):
            writer.write_frame(frame, FrameRecord(t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
        writer.write_volume(5, volume)
    return path, frames, volume


@pytest.mark.parametrize("image", ["raw", "volumes"])
def test_images_validate_against_ngff_05_with_ome_zarr_models(recording, image: str) -> None:
    from ome_zarr_models.v05 import Image

    model = Image.from_zarr(zarr.open_group(recording[0] / image, mode="r"))
    axes = model.ome_attributes.multiscales[0].axes
    assert [(a.name, a.unit) for a in axes][0] == ("t", "second")
    assert all(a.unit == "micrometer" for a in axes[1:])


@pytest.mark.parametrize("image", ["raw", "volumes"])
def test_images_validate_with_yaozarrs(recording, image: str) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(str(recording[0] / image))


def test_ome_zarr_py_reader_reads_raw_and_volumes(recording) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    path, frames, volume = recording
    raw_node = next(iter(Reader(parse_url(str(path / "raw")))()))
    np.testing.assert_array_equal(np.asarray(raw_node.data[0]), frames)
    assert raw_node.metadata["axes"][0]["unit"] == "second"
    volume_node = next(iter(Reader(parse_url(str(path / "volumes")))()))
    data = np.asarray(volume_node.data[0])
    assert data.shape == (12, 4, 64, 96)
    np.testing.assert_array_equal(data[5], volume)
    scale = volume_node.metadata["coordinateTransformations"][0][0]["scale"]
    assert scale == pytest.approx([0.01, 4.0, 0.325, 0.325])


def test_plain_zarr_reads_every_array(recording) -> None:
    path, frames, _ = recording
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["raw/0"][:], frames)
    np.testing.assert_array_equal(root["frames/image_number"][:], np.arange(12))
    np.testing.assert_array_equal(root["volume_t"][:], [5])
    assert root.attrs["deepz"]["complete"] is True
