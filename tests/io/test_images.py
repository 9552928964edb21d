import h5py
import hdf5plugin
import numpy as np
import pytest

from gpudiffuse.errors import ImageError
from gpudiffuse.geometry.cbf_header import read_pilatus_header
from gpudiffuse.geometry.xds import load_xds
from gpudiffuse.io.frames import FrameSource
from gpudiffuse.io.images import expand_template, hdf5_frame_count, read_header, read_image


def test_pilatus_mini_header(tiny_dataset):
    header = read_pilatus_header(str(tiny_dataset / "frames" / "frame_00003.cbf"))
    assert header["exposure_time"] == pytest.approx(0.2)
    assert header["start_angle"] == pytest.approx(10.0 + 2 * 0.5)
    assert header["angle_increment"] == pytest.approx(0.5)
    assert header["wavelength"] == pytest.approx(1.0)
    assert header["detector_distance"] == pytest.approx(80.0)
    assert header["pixel_size"] == pytest.approx((0.172, 0.172))
    assert header["sensor_thickness"] == pytest.approx(0.45)
    assert header["sensor_material"] == "Silicon"
    assert header["count_cutoff"] == 1048500
    assert len(header["beam_xy"]) == 2


def test_truncated_and_corrupt_cbf(tiny_copy):
    path = tiny_copy / "frames" / "frame_00002.cbf"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="frame_00002.cbf"):
        read_image(str(path))
    # the header alone still parses; its reader checks the file holds the announced binary section
    with pytest.raises(ImageError, match=f"truncated image {path}: {len(raw) // 2} bytes"):
        read_header(str(path))
    path.write_bytes(b"not an image" * 50)
    with pytest.raises(ImageError, match="corrupt, truncated or unsupported"):
        read_image(str(path))


def test_template_expansion(tiny_dataset):
    pairs = expand_template(str(tiny_dataset / "frames" / "frame_?????.cbf"))
    assert [n for n, _ in pairs] == list(range(1, 13))
    assert len(expand_template(str(tiny_dataset / "frames" / "frame_#####.cbf"), 3, 5)) == 3
    with pytest.raises(ImageError, match="matches no files"):
        expand_template(str(tiny_dataset / "frames" / "other_?????.cbf"))
    with pytest.raises(ImageError, match="missing, first .*frame_00013.cbf"):
        expand_template(str(tiny_dataset / "frames" / "frame_?????.cbf"), 10, 14)


def test_frame_source_chunks_in_order_with_exposure(tiny_dataset):
    sweep = load_xds(str(tiny_dataset))[0]
    chunks = list(FrameSource(sweep, chunk_size=5, workers=2, prefetch=2))
    assert [len(c.frame_indices) for c in chunks] == [5, 5, 2]
    np.testing.assert_array_equal(np.concatenate([c.frame_indices for c in chunks]), np.arange(12))
    assert chunks[0].data.dtype == np.int32 and chunks[0].data.shape == (5, 195, 487)
    np.testing.assert_array_equal(chunks[1].data[2], read_image(sweep.images[7]))
    np.testing.assert_allclose(chunks[2].exposure_times, 0.2)


def test_frame_source_rejects_frames_outside_the_scan(tiny_dataset):
    sweep = load_xds(str(tiny_dataset))[0]
    with pytest.raises(ImageError, match="outside"):
        FrameSource(sweep, frames=[0, 12])


def test_eiger_hdf5_with_bitshuffle(tmp_path):
    rng = np.random.default_rng(0)
    stack = rng.poisson(3, (7, 40, 30)).astype(np.uint32)
    data_file = tmp_path / "x_data_000001.h5"
    with h5py.File(data_file, "w") as f:
        f.create_dataset("entry/data/data", data=stack[:4], chunks=(1, 40, 30), **hdf5plugin.Bitshuffle())
    master = tmp_path / "x_master.h5"
    with h5py.File(master, "w") as f:
        f["entry/data/data_000001"] = h5py.ExternalLink(data_file.name, "entry/data/data")
        f.create_dataset("entry/data/data_000002", data=stack[4:], **hdf5plugin.LZ4())
    assert hdf5_frame_count(str(master)) == 7
    np.testing.assert_array_equal(read_image(str(master), 5), stack[5])
    np.testing.assert_array_equal(read_image(str(master), 2), stack[2])
    with pytest.raises(ImageError, match="has no frame 9"):
        read_image(str(master), 9)


def test_frame_source_rejects_nan_and_wrong_size(tiny_dataset, tmp_path):
    from dataclasses import replace

    sweep = load_xds(str(tiny_dataset))[0]
    stack = np.ones((sweep.scan.num_frames, 195, 487), np.float32)
    stack[3, 10, 10] = np.nan
    path = tmp_path / "float_master.h5"
    with h5py.File(path, "w") as f:
        f["entry/data/data_000001"] = stack
    n = sweep.scan.num_frames
    h5_sweep = replace(sweep, images=(str(path),) * n, image_indices=tuple(range(n)))
    with pytest.raises(ImageError, match="float_master.h5 contains NaN"):
        list(FrameSource(h5_sweep, chunk_size=4))
    with h5py.File(path, "w") as f:
        f["entry/data/data_000001"] = np.ones((n, 100, 487), np.int32)
    with pytest.raises(ImageError, match="is 487x100 pixels but the geometry says 487x195"):
        list(FrameSource(h5_sweep, chunk_size=4))


def test_a_cbf_whose_pixels_do_not_match_its_checksum_is_refused(tiny_copy, tmp_path, capsys):
    """The binary section overwritten with the size kept: fabio only logs the MD5 mismatch; the
    read fails naming the file, and `process` stops with that message and leaves no output."""
    from gpudiffuse.cli import main

    frame = sorted((tiny_copy / "frames").glob("*.cbf"))[5]
    raw = bytearray(frame.read_bytes())
    start = raw.index(b"\x0c\x1a\x04\xd5") + 4
    raw[start + 100:start + 120] = bytes(20)
    frame.write_bytes(bytes(raw))
    with pytest.raises(ImageError, match=f"corrupt image {frame}: the pixel data do not match the header's Content-MD5"):
        read_image(str(frame))
    read_image(str(sorted((tiny_copy / "frames").glob("*.cbf"))[4]))  # its neighbour still reads
    out = tmp_path / "out"
    assert main(["process", "--no-report", "--xds", str(tiny_copy), "-o", str(out), "--device", "cpu"]) == 1
    assert f"corrupt image {frame}" in capsys.readouterr().err
    assert not out.exists()
