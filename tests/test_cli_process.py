"""``gpudiffuse process`` on the tiny dataset and its answers to bad input."""

import json
import os

import numpy as np
import pytest

from gpudiffuse.cli import main

from cli_helpers import folder_cc_half, printed_unscaled_cc_half


def run(capsys, *args):
    code = main(["process", "--no-report", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def expect_failure(capsys, tmp_path, args, *fragments):
    out = tmp_path / "out"
    code, _, err = run(capsys, *args, "-o", str(out), "--device", "cpu", "--scale", "isotropic")
    assert code == 1, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists(), "no partial output may be left behind"


def test_process_tiny(tiny_dataset, tmp_path, capsys):
    """The default run fits the scaling model; the statistics carry CC½ of the unscaled
    observations beside the scaled one: the same numbers as merging integrate.nxs's table directly."""
    import h5py

    out = tmp_path / "out"
    code, stdout, err = run(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu")
    assert code == 0, err
    assert "CC1/2" in stdout and "merged" in stdout
    assert (out / "merged.nxs").is_file() and (out / "map.nxs").is_file()
    assert "CC1/2(unscaled)" in stdout and "scaling (joint): chi2" in stdout
    with h5py.File(out / "merged.nxs") as f:
        after, before = f["entry/statistics/cc_half"][()], f["entry/statistics/cc_half_unscaled"][()]
    np.testing.assert_allclose(before, folder_cc_half(out))
    assert not np.allclose(before, after, equal_nan=True)


def test_frame_range_outside_the_files(tiny_dataset, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--frames", "5", "20"],
                   "frame range 5-20 is outside the files' range 1-12")


def test_every_pixel_masked(tiny_dataset, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--beamstop-disc", "243,97,5000"],
                   "every pixel", "is masked")


def test_dmin_beyond_the_detector_edge(tiny_dataset, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--dmin", "1.0"],
                   "--dmin 1.0 Å is beyond the detector edge")


def test_ndiv_incompatible_with_laue_group(snase_dir, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--expt", str(snase_dir / "experiments" / "experiments_for_lunus_00001.json"),
                                      "--ndiv", "3", "5", "3"], "incompatible with Laue group 4/m")


def test_background_frames_of_another_size(tiny_copy, tmp_path, capsys):
    from fabio.cbfimage import CbfImage

    bkg = tmp_path / "bkg"
    bkg.mkdir()
    CbfImage(data=np.ones((100, 80), np.int32)).write(str(bkg / "bkg_00001.cbf"))
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy), "--background", str(bkg / "bkg_#####.cbf")],
                   "background frame", "is 80x100 pixels but the data frames are 487x195")


def _background_frame(path, value, exposure=1.0, shape=(195, 487)):
    from fabio.cbfimage import CbfImage

    header = {} if exposure is None else {"_array_data.header_convention": "PILATUS_1.2",
                                          "_array_data.header_contents": f"# Exposure_time {exposure:.7f} s\r\n"}
    CbfImage(data=np.full(shape, value, np.int32), header=header).write(str(path))


def test_background_is_subtracted(tiny_dataset, tmp_path, capsys):
    """integrate.nxs keeps the raw sums (Σ counts, Σ K·t, Σ background rate·t); the observation
    table the scale step builds from them is rate − background rate."""
    import h5py

    from gpudiffuse.steps.integrate import load_observations

    bkg = tmp_path / "bkg"
    bkg.mkdir()
    for i in range(2):
        _background_frame(bkg / f"bkg_{i + 1:05d}.cbf", 20)
    common = ["--xds", str(tiny_dataset), "--device", "cpu", "--scale", "none", "--no-bragg-mask"]
    assert run(capsys, *common, "-o", str(tmp_path / "plain"))[0] == 0
    assert run(capsys, *common, "-o", str(tmp_path / "sub"), "--background", str(bkg / "bkg_#####.cbf"))[0] == 0

    with h5py.File(tmp_path / "plain" / "integrate.nxs") as a, h5py.File(tmp_path / "sub" / "integrate.nxs") as b:
        for column in ("H", "K", "L", "counts", "pixels", "kt_sum"):
            np.testing.assert_array_equal(a[f"entry/diffuse/{column}"][()], b[f"entry/diffuse/{column}"][()])
        # 20 counts per 1 s background frame over t = 0.2 s frames: 4 counts per pixel-frame
        raw = {k: b[f"entry/diffuse/{k}"][()] for k in ("batch", "wedge", "H", "K", "L", "counts", "pixels", "kt_sum",
                                                        "bkg_sum")}
        np.testing.assert_allclose(raw["bkg_sum"], 4.0 * raw["pixels"], rtol=1e-9)
        assert b["entry/diffuse/bkg_sum"].attrs["units"] == "counts"
    table = load_observations(str(tmp_path / "sub"))
    keys = ("batch", "wedge", "H", "K", "L")
    low = np.array([min(raw[k].min(), table[k].min()) for k in keys])
    dims = [int(max(raw[k].max(), table[k].max()) - lo + 1) for k, lo in zip(keys, low)]
    code = [np.ravel_multi_index(tuple(np.asarray(t[k], np.int64) - lo for k, lo in zip(keys, low)), dims)
            for t in (raw, table)]
    rows = np.searchsorted(code[0], code[1])  # the raw rows are in canonical (sorted) key order
    assert len(rows) > 1000 and np.array_equal(code[0][rows], code[1])
    np.testing.assert_allclose(table["rate"], (raw["counts"] - 4.0 * raw["pixels"])[rows] / raw["kt_sum"][rows],
                               rtol=1e-9)
    with h5py.File(tmp_path / "sub" / "merged.nxs") as m, h5py.File(tmp_path / "plain" / "merged.nxs") as p:
        assert np.mean(m["entry/merged/intensity"][()]) < np.mean(p["entry/merged/intensity"][()])
    # `gpudiffuse scale` fits the same background-subtracted table that process would scale
    capsys.readouterr()
    assert main(["scale", "-o", str(tmp_path / "sub"), "--scale-iterations", "20", "--overwrite"]) == 0
    stdout = capsys.readouterr().out
    expected = folder_cc_half(tmp_path / "sub")
    np.testing.assert_allclose(printed_unscaled_cc_half(stdout, len(expected)), expected, atol=5e-5)


def test_background_frames_without_exposure_time(tiny_dataset, tmp_path, capsys):
    bkg = tmp_path / "bkg"
    bkg.mkdir()
    _background_frame(bkg / "bkg_00001.cbf", 20, exposure=None)
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--background", str(bkg / "bkg_#####.cbf")],
                   "background frame", "bkg_00001.cbf: no positive Exposure_time")


def test_engines_and_process_pools_give_the_same_map(tiny_dataset, tmp_path, capsys):
    """--engine numpy in a pool of 2 processes (blocks of wedges) and the default compiled engine
    write the same merged.nxs: integer columns equal, intensities within 1e-12."""
    import h5py

    merged = {}
    for name, extra in (("cpu", []), ("numpy", ["--engine", "numpy", "--nproc", "2", "--wedge", "1"])):
        out = tmp_path / name
        wedge = [] if extra else ["--wedge", "1"]
        code, _, err = run(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "none",
                           *wedge, *extra)
        assert code == 0, err
        with h5py.File(out / "merged.nxs") as f:
            merged[name] = {k: f["entry/merged"][k][()] for k in ("h", "k", "l", "n", "intensity", "sigma")}
    for key in ("h", "k", "l", "n"):
        np.testing.assert_array_equal(merged["cpu"][key], merged["numpy"][key])
    for key in ("intensity", "sigma"):
        np.testing.assert_allclose(merged["cpu"][key], merged["numpy"][key], rtol=1e-12)


BAD_NUMBERS = [("--nproc", "0", "must be at least 1, got 0"), ("--wedge", "-2", "must be a positive number, got -2"),
               ("--outlier-k", "-1", "must be at least 0, got -1"), ("--shells", "0", "must be at least 1, got 0"),
               ("--min-pixels", "-5", "must be at least 0, got -5"), ("--scale-iterations", "0", "must be at least 1"),
               ("--dmin", "nan", "must be a positive number, got nan"), ("--wedge-frames", "2.5", "expected an integer"),
               ("--sigma-cutoff", "0", "must be a positive number"), ("--a-frames", "0", "must be at least 1"),
               ("--dask-workers", "-3", "must be at least 1, got -3")]


@pytest.mark.parametrize("option, value, message", BAD_NUMBERS)
def test_numeric_options_are_checked_before_any_work(tiny_dataset, tmp_path, capsys, option, value, message):
    """A usage error: exit status 2, one line naming the option and the value, no output folder."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), option, value])
    assert exit_info.value.code == 2
    assert f"error: argument {option}: {message}" in capsys.readouterr().err
    assert not out.exists()


def test_bad_engine_options(tiny_dataset, tmp_path, capsys):
    from conftest import gpu_available

    if not gpu_available():
        expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--engine", "cuda"], "--engine cuda cannot run")


def test_output_path_faults_are_named_before_any_work(tiny_dataset, tmp_path, capsys, monkeypatch):
    a_file = tmp_path / "a_file"
    a_file.write_text("user data")
    cases = [(str(a_file), f"-o {a_file}: exists and is not a folder"),
             (str(a_file / "sub"), f"-o {a_file / 'sub'}: {a_file} is not a folder"),
             ("", "-o is empty")]
    for out, message in cases:
        code, _, err = run(capsys, "--xds", str(tiny_dataset), "-o", out, "--device", "cpu")
        assert code == 2 and message in err and "Traceback" not in err  # usage errors exit with 2
    assert a_file.read_text() == "user data" and sorted(os.listdir(tmp_path)) == ["a_file"]
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # as a user without write permission
    code, _, err = run(capsys, "--xds", str(tiny_dataset), "-o", str(tmp_path / "new"), "--device", "cpu")
    assert code == 2 and f"-o {tmp_path / 'new'}: no permission to write in {tmp_path}" in err
    assert not (tmp_path / "new").exists()


def test_changed_inputs_rerun_their_steps_and_changed_parameters_are_named(tiny_copy, tmp_path, capsys, caplog):
    """The cache key of a step holds the parameters of every step before it and a fingerprint of
    the input files: an edited geometry file or a touched frame runs the steps again; a changed
    parameter is refused without --overwrite, naming it; with --overwrite the scaling step is
    refitted too (its key used to omit the integration parameters)."""
    import logging

    out = tmp_path / "out"
    args = ["--xds", str(tiny_copy), "-o", str(out), "--device", "cpu"]
    assert run(capsys, *args)[0] == 0
    stamps = {name: os.stat(out / name).st_mtime_ns for name in ("experiment.nxs", "integrate.nxs", "scale.nxs")}

    with caplog.at_level(logging.INFO):
        assert run(capsys, *args)[0] == 0
    assert "integrate.nxs is up to date" in caplog.text
    assert all(os.stat(out / n).st_mtime_ns == t for n, t in stamps.items())

    gxparm = tiny_copy / "GXPARM.XDS"
    gxparm.write_text(gxparm.read_text() + "\n")  # same geometry, other bytes: the content hash sees it
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run(capsys, *args)[0] == 0
    assert f"the input files changed since it was written ({gxparm})" in caplog.text
    assert all(os.stat(out / n).st_mtime_ns > t for n, t in stamps.items())

    frame = sorted((tiny_copy / "frames").iterdir())[3]
    os.utime(frame, ns=(os.stat(frame).st_atime_ns, os.stat(frame).st_mtime_ns + 10**9))
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert run(capsys, *args)[0] == 0
    assert "input files changed since it was written (image files)" in caplog.text

    code, _, err = run(capsys, *args, "--wedge-frames", "3")
    assert code == 1 and "integrate.nxs exists and was made with other parameters (integration.wedge_frames" in err
    stamps = {name: os.stat(out / name).st_mtime_ns for name in ("integrate.nxs", "scale.nxs")}
    assert run(capsys, *args, "--wedge-frames", "3", "--overwrite")[0] == 0
    assert all(os.stat(out / n).st_mtime_ns > t for n, t in stamps.items())


def test_row_filters_and_the_scale_mode_change_without_reading_the_frames_again(tiny_dataset, tmp_path, capsys):
    """integrate.nxs holds the raw voxel sums: --min-pixels, --min-counts and --scale are applied
    when the observation table is built, so changing them reruns scale, merge and map only."""
    out = tmp_path / "out"
    args = ["--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "isotropic"]
    assert run(capsys, *args)[0] == 0
    stamps = {name: os.stat(out / name).st_mtime_ns for name in ("experiment.nxs", "peaks.nxs", "integrate.nxs")}
    code, _, err = run(capsys, *args, "--min-pixels", "4")
    assert code == 1 and "scale.nxs exists and was made with other parameters (min_pixels)" in err
    assert run(capsys, *args, "--min-pixels", "4", "--overwrite")[0] == 0
    assert all(os.stat(out / n).st_mtime_ns == t for n, t in stamps.items())
    import h5py

    with h5py.File(out / "merged.nxs") as f:
        n_obs = f["entry/merged/n"][()]
        raw_pixels = None
    with h5py.File(out / "integrate.nxs") as f:
        raw_pixels = f["entry/diffuse/pixels"][()]
    # every merged observation had at least 4 pixel-frames: fewer observations than rows with ≥ 1
    assert n_obs.sum() <= (raw_pixels >= 4).sum() < (raw_pixels >= 1).sum()


def test_dmin_coarser_than_the_innermost_data_is_refused_before_any_work(tiny_dataset, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--dmin", "3000"],
                   "--dmin 3000.0 Å keeps no data: the innermost unmasked pixel records 2046.78")


def test_a_grid_too_large_for_the_memory_is_refused_before_integration(tiny_dataset, tmp_path, capsys):
    expect_failure(capsys, tmp_path, ["--xds", str(tiny_dataset), "--ndiv", "5000", "5000", "5000"],
                   "--ndiv 5000 5000 5000 to", "GiB; this machine has")


def test_the_same_files_spelled_otherwise_are_the_same_run(tiny_dataset, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    assert run(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "none")[0] == 0
    monkeypatch.chdir(tiny_dataset.parent)
    code, _, err = run(capsys, "--xds", f"./{tiny_dataset.name}/", "-o", str(out), "--device", "cpu",
                       "--scale", "none")
    assert code == 0, err


def test_outputs_say_their_units_cell_and_space_group(tiny_dataset, tmp_path, capsys):
    import h5py

    out = tmp_path / "out"
    assert run(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "none")[0] == 0
    with h5py.File(out / "map.nxs") as f:
        data = f["entry/data"]
        assert data["intensity"].attrs["units"] == data["intensity_errors"].attrs["units"] == "counts / (s sr), relative scale"
        assert all(data[a].attrs["units"] == "r.l.u." for a in "hkl")
        assert data.attrs["space_group"] == "I 2 2 2"
        np.testing.assert_allclose(data.attrs["unit_cell"], [40, 48, 56, 90, 90, 90], rtol=1e-6)
        np.testing.assert_array_equal(data.attrs["ndiv"], [3, 3, 3])
    with h5py.File(out / "merged.nxs") as f:
        merged = f["entry/merged"]
        assert merged["intensity"].attrs["units"] == merged["sigma"].attrs["units"] == "counts / (s sr), relative scale"
        assert merged["s"].attrs["units"] == "1/angstrom" and merged["h"].attrs["units"] == "r.l.u."
    # provenance: the command line in every step file, the input fingerprint in the import's key
    for name in ("experiment", "peaks", "integrate", "scale", "merged", "map"):
        with h5py.File(out / f"{name}.nxs") as f:
            assert f["entry"].attrs["command_line"] == f"gpudiffuse process --no-report --xds {tiny_dataset} -o {out} " \
                                                      "--device cpu --scale none", name
    with h5py.File(out / "experiment.nxs") as f:
        key = json.loads(f["entry"].attrs["parameters"])
    assert len(key["inputs"]["frames"]) == 64 and sorted(key["inputs"]["geometry"]) == [
        str(tiny_dataset / "GXPARM.XDS"), str(tiny_dataset / "XDS.INP")]
    with h5py.File(out / "integrate.nxs") as f:
        assert f["entry/diffuse/kt_sum"].attrs["units"] == "sr·s" and f["entry/diffuse/counts"].attrs["units"] == "counts"


def test_quiet_terminal_and_a_whole_log_file(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["-q", "--no-progress", "process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu",
                 "--scale", "none"]) == 0
    captured = capsys.readouterr()
    assert "INFO" not in captured.err and "written" in captured.out
    log = (out / "gpudiffuse.log").read_text()
    assert "INFO gpudiffuse.pipeline: step integrate:" in log and "\r" not in log
    assert not (out / ".gpudiffuse.lock").exists()


def test_dmin_is_a_hard_limit_on_the_voxel_centres(tiny_dataset, tmp_path, capsys):
    import h5py

    from gpudiffuse.experiment import read_experiment

    out = tmp_path / "out"
    assert run(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "none",
               "--dmin", "2.2")[0] == 0
    crystal = read_experiment(str(out / "experiment.nxs")).sweeps[0].crystal
    with h5py.File(out / "merged.nxs") as f:
        hkl = np.column_stack([f["entry/merged"][k][()] for k in "hkl"])
        d_min_shells = f["entry/statistics/d_min"][()]
    s2 = np.einsum("ij,jk,ik->i", hkl, crystal.A.T @ crystal.A, hkl)
    d = 1 / np.sqrt(s2[s2 > 0])
    assert d.min() >= 2.2 * (1 - 1e-9) and d.min() < 2.3
    assert d_min_shells.min() >= 2.2 * (1 - 1e-6)


def test_a_run_killed_mid_way_resumes_to_the_files_of_a_clean_run(tiny_dataset, tmp_path, capsys):
    """kill -9 during the scaling step: the finished steps stay, the lock of the dead process and
    a half-written temporary file are cleared by the next run, which resumes and ends with the
    same files as a run that was never interrupted."""
    import signal
    import subprocess
    import sys
    import time

    import h5py

    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["process", "--no-report", "--xds", str(tiny_dataset), "--device", "cpu", "--no-progress"]
    child = subprocess.Popen([sys.executable, "-m", "gpudiffuse", *args, "-o", str(killed)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (killed / "integrate.nxs").exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert (killed / "integrate.nxs").exists() and not (killed / "map.nxs").exists()
    assert (killed / ".gpudiffuse.lock").exists()  # left by the dead process
    (killed / ".tmp-merged-x.nxs").write_bytes(b"half a file")
    stamp = os.stat(killed / "integrate.nxs").st_mtime_ns
    assert main([*args, "-o", str(killed)]) == 0
    assert os.stat(killed / "integrate.nxs").st_mtime_ns == stamp  # resumed, not redone
    assert main([*args, "-o", str(clean)]) == 0
    assert sorted(os.listdir(killed)) == sorted(os.listdir(clean))
    for name in ("scale.nxs", "merged.nxs", "map.nxs"):
        with h5py.File(killed / name) as a, h5py.File(clean / name) as b:
            names = []
            a.visit(names.append)
            for item in names:
                if isinstance(a[item], h5py.Dataset):
                    np.testing.assert_array_equal(a[item][()], b[item][()], err_msg=f"{name}: {item}")


def test_a_closed_pipe_stops_the_command_without_a_traceback(tiny_processed):
    """`gpudiffuse merge OUT | head -1`: the reader goes away while the table is printed."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-m", "gpudiffuse", "merge", str(tiny_processed)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stdout.close()  # nobody reads: the first print meets a broken pipe
    err = child.stderr.read().decode()
    assert child.wait() == 141, err
    assert "Traceback" not in err and "BrokenPipe" not in err
