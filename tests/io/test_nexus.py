"""Atomic NeXus writes: the file appears whole or not at all, with the user's umask."""

import os
import stat

import pytest

from gpudiffuse.errors import OutputExistsError
from gpudiffuse.io.nexus import atomic_nexus


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_honour_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        with atomic_nexus(tmp_path / "a.nxs") as handle:
            handle["x"] = 1
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.nxs").st_mode) == mode


def test_a_failed_write_leaves_nothing_and_an_existing_file_is_kept(tmp_path):
    path = tmp_path / "b.nxs"
    with pytest.raises(RuntimeError):
        with atomic_nexus(path) as handle:
            handle["x"] = 1
            raise RuntimeError("interrupted")
    assert os.listdir(tmp_path) == []
    path.write_bytes(b"user data")
    with pytest.raises(OutputExistsError, match="already exists; pass --overwrite"):
        with atomic_nexus(path):
            pass
    assert path.read_bytes() == b"user data" and os.listdir(tmp_path) == ["b.nxs"]


def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    import errno

    import h5py

    from gpudiffuse.errors import OutputError

    class FullDisk:
        def __init__(self, *args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(h5py, "File", FullDisk)
    with pytest.raises(OutputError, match=f"cannot write {tmp_path / 'c.nxs'}: No space left on device"):
        with atomic_nexus(tmp_path / "c.nxs"):
            pass
    assert os.listdir(tmp_path) == []
