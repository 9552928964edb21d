"""One run per output folder; clean-up removes only what the run wrote (OutputFolder)."""

import os
import subprocess
import sys

import pytest

from gpudiffuse.errors import GpudiffuseError
from gpudiffuse.io.nexus import atomic_nexus
from gpudiffuse.io.output_folder import LOCK_NAME, OutputFolder


def _write(path):
    with atomic_nexus(path) as handle:
        handle["x"] = 1


def test_a_second_run_is_refused_with_the_process_holding_the_folder(tmp_path):
    (tmp_path / LOCK_NAME).write_text(str(os.getppid()))  # a live process
    with pytest.raises(GpudiffuseError, match=f"in use by another gpudiffuse run \\(process {os.getppid()}\\)"):
        with OutputFolder(str(tmp_path)):
            pass
    assert (tmp_path / LOCK_NAME).read_text() == str(os.getppid())


def test_a_killed_runs_lock_and_temporary_files_are_cleared(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    (tmp_path / LOCK_NAME).write_text(dead)
    (tmp_path / ".tmp-abc.nxs").write_bytes(b"half written")
    (tmp_path / "merged.nxs").write_bytes(b"a finished step")
    with OutputFolder(str(tmp_path)):
        assert (tmp_path / LOCK_NAME).read_text() == str(os.getpid())
    assert sorted(os.listdir(tmp_path)) == ["merged.nxs"]


def test_an_error_removes_only_what_this_run_wrote_and_ctrl_c_keeps_finished_steps(tmp_path):
    (tmp_path / "notes.txt").write_text("the user's")
    with pytest.raises(GpudiffuseError):
        with OutputFolder(str(tmp_path)):
            _write(tmp_path / "experiment.nxs")
            raise GpudiffuseError("bad input found late")
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]

    new = tmp_path / "new"
    with pytest.raises(GpudiffuseError):
        with OutputFolder(str(new)):
            _write(new / "experiment.nxs")
            raise GpudiffuseError("bad input")
    assert not new.exists()

    with pytest.raises(KeyboardInterrupt):
        with OutputFolder(str(new)):
            _write(new / "experiment.nxs")
            raise KeyboardInterrupt
    assert sorted(os.listdir(new)) == ["experiment.nxs"]
