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


def test_same_bytes_as_hdf5_own_filters(tmp_path):
    """The chunks are exactly what HDF5's shuffle + deflate would have stored."""
    values = np.random.default_rng(4).poisson(30, (40, 33)).astype(np.float64)
    with h5py.File(tmp_path / "f.h5", "w") as handle:
        write_compressed(handle, {"ours": values})
        chunks = handle["ours"].chunks
        handle.create_dataset("hdf5", data=values, chunks=chunks, compression="gzip", compression_opts=1, shuffle=True)
        ours, theirs = handle["ours"].id, handle["hdf5"].id
        for i in range(ours.get_num_chunks()):
            assert ours.read_direct_chunk(ours.get_chunk_info(i).chunk_offset) == \
                theirs.read_direct_chunk(theirs.get_chunk_info(i).chunk_offset)
