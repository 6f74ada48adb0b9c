"""A recording opens whole in standard tools: its root validates as an NGFF 0.5 image collection (yaozarrs,
ome-zarr-models), ome-zarr-py finds and reads every image, and plain zarr reads every table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from storage import RecordingReader, RecordingWriter
from wire.frames import FrameMeta
from storage.calibration import CalibrationStore, ScanRecord
from storage.synthetic import blob_volume

PLANES = np.linspace(-6.0, 6.0, 4)
VOLUME_FRAMES = [1, 5, 9]  # every 4th frame: the volumes' time step is 0.04 s from 0.01 s
SCAN_Z = np.arange(-2.0, 2.5, 0.5)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, np.ndarray]:
    path = tmp_path_factory.mktemp("interop") / "rec.zarr"
    frames = np.stack([blob_volume((64, 96), n_blobs=10, seed=t) for t in range(12)])
    volumes = np.stack([blob_volume((4, 64, 96), n_blobs=10, seed=99 + t) for t in VOLUME_FRAMES])
    with RecordingWriter(
        path, frame_shape=(64, 96), pixel_size_um=0.325, planes_um=PLANES, volume_every=1, frame_interval_s=0.01
    ) as writer:
        for t, frame in enumerate(frames):
            writer.write_frame(frame, FrameMeta(t, t, t * 0.01, t * 0.01, 0.0, 10.0, 0, False))
            if t in VOLUME_FRAMES:
                writer.write_volume(t, volumes[VOLUME_FRAMES.index(t)])
                writer.write_tracks(t, np.array([3, 8]), np.array([[0.0, 1, 2], [1, 5, 6]]) + t, np.ones(2), np.ones(2))
        record = ScanRecord(0, "start", 0.0, SCAN_Z.tolist(), SCAN_Z.tolist(), 0.325, 0, 0.0, 0.4)
        CalibrationStore(path).write(record, np.ones((len(SCAN_Z), 64, 96), np.uint16), [1], [[0.0, 1.0, 2.0]])
    return path, frames, volumes


def test_root_validates_as_an_ngff_05_collection_with_yaozarrs(recording) -> None:
    yaozarrs = pytest.importorskip("yaozarrs")
    yaozarrs.validate_zarr_store(str(recording[0]))


def test_root_lists_every_image_for_ome_zarr_models(recording) -> None:
    from ome_zarr_models.v05.bioformats2raw import BioFormats2Raw

    model = BioFormats2Raw.from_zarr(zarr.open_group(recording[0], mode="r"))
    images = model.images
    names = [images[p].ome_attributes.multiscales[0].name for p in model.image_paths]
    assert names == ["raw", "volumes", "calibration 0"]
    for image in images.values():
        axes = image.ome_attributes.multiscales[0].axes
        assert all(a.unit == ("second" if a.name == "t" else "micrometer") for a in axes)


def test_volumes_are_dense_with_their_true_time_axis(recording) -> None:
    path, _, volumes = recording
    group = zarr.open_group(path / "1", mode="r")
    np.testing.assert_array_equal(group["0"][:], volumes)  # only the computed volumes, no fill
    transforms = group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    assert transforms[0]["scale"] == pytest.approx([0.04, 4.0, 0.325, 0.325])
    assert transforms[1]["translation"] == pytest.approx([0.01, -6.0, 0.0, 0.0])
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["volume_t"][:], VOLUME_FRAMES)
    reader = RecordingReader(path)
    np.testing.assert_allclose(reader.volume_times_s, np.array(VOLUME_FRAMES) * 0.01)
    np.testing.assert_array_equal(reader.volume(5), volumes[1])
    assert reader.volume(4) is None


def test_ome_zarr_py_finds_and_reads_every_image(recording) -> None:
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader
    from ome_zarr.utils import find_multiscales

    path, frames, volumes = recording
    found = find_multiscales(path)
    assert [(Path(p).name, name) for p, name, _ in found] == [("0", "raw"), ("1", "volumes"), ("2", "calibration 0")]
    raw = next(iter(Reader(parse_url(str(found[0][0])))()))
    np.testing.assert_array_equal(np.asarray(raw.data[0]), frames)
    vol = next(iter(Reader(parse_url(str(found[1][0])))()))
    np.testing.assert_array_equal(np.asarray(vol.data[0]), volumes)
    scan = next(iter(Reader(parse_url(str(found[2][0])))()))
    assert scan.metadata["coordinateTransformations"][0][0]["scale"] == pytest.approx([0.5, 0.325, 0.325])


def test_ome_xml_names_every_image_with_its_physical_sizes(recording) -> None:
    import tifffile

    ome = tifffile.xml2dict((recording[0] / "OME" / "METADATA.ome.xml").read_text())["OME"]
    assert [(i["ID"], i["Name"]) for i in ome["Image"]] == [("Image:0", "raw"), ("Image:1", "volumes"),
                                                             ("Image:2", "calibration 0")]  # fmt: skip
    raw, volumes, scan = (i["Pixels"] for i in ome["Image"])
    assert (raw["SizeT"], raw["SizeY"], raw["SizeX"], raw["PhysicalSizeX"], raw["TimeIncrement"]) == (12, 64, 96,
                                                                                                  0.325, 0.01)
    assert (volumes["SizeT"], volumes["SizeZ"], volumes["PhysicalSizeZ"]) == (3, 4, 4.0)
    assert (scan["SizeZ"], scan["PhysicalSizeZ"], scan["PhysicalSizeZUnit"]) == (len(SCAN_Z), 0.5, "µm")


def test_tables_carry_their_units(recording) -> None:
    path, frames, _ = recording
    root = zarr.open_group(path, mode="r")
    np.testing.assert_array_equal(root["0/0"][:], frames)
    np.testing.assert_array_equal(root["frames/image_number"][:], np.arange(12))
    assert root["tracks"].attrs["units"]["z"] == "micrometer" and root["tracks/t"].attrs["unit"] == "frame index"
    assert root["traces"].attrs["units"]["dff"].startswith("dF/F")
    assert root["frames/camera_time_s"].attrs["unit"] == "second"
    assert root.attrs["deepz"]["complete"] is True


@pytest.mark.parametrize("name", ["stack.zarr", "stack.ome.tif"])
def test_focal_stacks_validate_and_carry_physical_sizes(tmp_path: Path, name: str) -> None:
    from storage.stack_file import save_stack

    stack = np.arange(3 * 8 * 10, dtype=np.uint16).reshape(3, 8, 10)
    path = save_stack(tmp_path / name, stack, np.array([-1.0, 0.0, 1.0]), pixel_size_um=0.25)
    if name.endswith(".zarr"):
        from ome_zarr_models.v05 import Image

        yaozarrs = pytest.importorskip("yaozarrs")
        yaozarrs.validate_zarr_store(str(path))
        scale = Image.from_zarr(zarr.open_group(path, mode="r")).ome_attributes.multiscales[0].datasets[0]
        assert scale.coordinateTransformations[0].scale == pytest.approx([1.0, 0.25, 0.25])
        return
    import tifffile

    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome
        pixels = tifffile.xml2dict(tif.ome_metadata)["OME"]["Image"]["Pixels"]
        np.testing.assert_array_equal(tif.asarray(), stack)
    assert (pixels["PhysicalSizeX"], pixels["PhysicalSizeY"], pixels["PhysicalSizeZ"]) == (0.25, 0.25, 1.0)
    assert pixels["PhysicalSizeXUnit"] == "µm"
