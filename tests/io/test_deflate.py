"""Datasets compressed chunk by chunk in threads read back exactly, with the standard filters."""

import h5py
import numpy as np
import pytest

from gpudiffuse.io.deflate import chunk_shape, write_compressed


def test_chunk_shape_halves_the_longest_axis_until_small_enough():
    assert chunk_shape((127, 163, 149), 8) == (64, 41, 38)  # 797 KB
    assert chunk_shape((1000,), 8) == (1000,)
    assert chunk_shape((10**6,), 8, target=2**20) == (125000,)


@pytest.mark.parametrize("workers", [1, 3])
def test_read_back_exactly_by_plain_h5py(tmp_path, workers):
    rng = np.random.default_rng(3)
    arrays = {"map": rng.normal(size=(97, 131, 71)),  # chunks (49, 66, 36): edge chunks on every axis
              "index": rng.integers(-5, 10**6, 100_003).astype(np.int32),
              "flag": rng.random(999) < 0.3,
              "small": np.arange(3, dtype=np.uint16),
              "scalar": np.float64(2.5),
              "empty": np.zeros(0)}
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as handle:
        write_compressed(handle, arrays, workers=workers)
    with h5py.File(path, "r") as handle:
        for name, array in arrays.items():
            np.testing.assert_array_equal(handle[name][()], array)
            assert handle[name].dtype == np.asarray(array).dtype
        assert handle["map"].compression == "gzip" and handle["map"].shuffle
        assert handle["map"].compression_opts == 1
        assert handle["index"].id.get_storage_size() < arrays["index"].nbytes


@pytest.mark.parametrize("coder", ["isal", "zlib"])
def test_chunks_are_zlib_streams_of_the_shuffled_bytes(tmp_path, monkeypatch, coder):
    """What HDF5's shuffle + deflate filters decode: each stored chunk inflates (zlib, the library
    behind HDF5's filter) to the chunk's bytes grouped by significance, with either coder; and
    HDF5's own filters read the dataset back exactly."""
    import sys
    import zlib

    if coder == "zlib":
        monkeypatch.setitem(sys.modules, "isal", None)  # the fallback when python-isal is missing
    else:
        pytest.importorskip("isal")
    values = np.random.default_rng(4).poisson(30, (40, 33)).astype(np.float64)
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        write_compressed(handle, {"ours": values})
        dataset = handle["ours"]
        rows, cols = dataset.chunks
        for i in range(dataset.id.get_num_chunks()):
            r0, c0 = dataset.id.get_chunk_info(i).chunk_offset
            filters, payload = dataset.id.read_direct_chunk((r0, c0))
            assert filters == 0  # both filters applied
            block = np.zeros((rows, cols))
            part = values[r0:r0 + rows, c0:c0 + cols]
            block[:part.shape[0], :part.shape[1]] = part
            shuffled = block.view(np.uint8).reshape(-1, 8).T.tobytes()
            assert zlib.decompress(payload) == shuffled
        np.testing.assert_array_equal(dataset[()], values)
