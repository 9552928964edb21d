"""The steps as subcommands: ``gpudiffuse scale`` refits a processed folder, and ``merge`` then
``map`` rebuild the map from it, giving the files ``process`` gives with the same options."""

import h5py
import numpy as np

from gpudiffuse.cli import main

from cli_helpers import folder_cc_half, printed_unscaled_cc_half


def _datasets(path):
    """Every dataset of an HDF5 file by name (the provenance attributes are not compared)."""
    out = {}
    with h5py.File(path) as f:
        f.visititems(lambda name, item: out.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return out


def test_scale_refits_reports_and_refuses_to_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["process", "--no-report", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu"]) == 0
    assert "scaling (joint): chi2" in capsys.readouterr().out
    original = (out / "scale.nxs").read_bytes()
    with h5py.File(out / "scale.nxs") as f:  # Gauss-Newton: uncertainties and a record of the rounds
        model = f["entry/model"]
        for name in "bcad":
            sigma = model[f"{name}_sigma"][()]
            assert sigma.shape == model[name].shape and np.all(np.isfinite(sigma)) and np.all(sigma >= 0)
        assert np.all(model["b_sigma"][()] > 0) and model["b_sigma"].attrs["units"] == "1"
        assert np.isnan(model["rounds/k"][0]) and list(model["rounds/k"][1:]) == [10.0, 5.0]
        assert model["rounds/iterations"][()].sum() == model.attrs["iterations"]

    # the same options: the file is reused; others: refused without --overwrite, naming the option
    assert main(["scale", "-o", str(out)]) == 0
    assert (out / "scale.nxs").read_bytes() == original
    assert main(["scale", "-o", str(out), "--scale-method", "alternating"]) == 1
    assert "scale.nxs exists and was made with other parameters (scaling.method); pass --overwrite" in \
        capsys.readouterr().err
    assert (out / "scale.nxs").read_bytes() == original

    assert main(["scale", "-o", str(out), "--scale-method", "alternating", "--scale-iterations", "30",
                 "--overwrite"]) == 0
    stdout = capsys.readouterr().out
    assert "scaling (alternating): chi2" in stdout
    with h5py.File(out / "scale.nxs") as f:
        assert f["entry/model"].attrs["method"] == "alternating"
    # the printed unscaled CC½ is that of merging integrate.nxs's table directly
    expected = folder_cc_half(out)
    np.testing.assert_allclose(printed_unscaled_cc_half(stdout, len(expected)), expected, atol=5e-5)
    # the merged file and map of the old fit are gone: the folder never holds a map older than its scale.nxs
    assert not (out / "merged.nxs").exists() and not (out / "map.nxs").exists()


def test_scale_merge_map_after_a_refit_equal_process(tiny_dataset, tmp_path, capsys):
    first, direct = tmp_path / "first", tmp_path / "direct"
    common = ["--xds", str(tiny_dataset), "--device", "cpu"]
    assert main(["process", "--no-report", *common, "-o", str(first)]) == 0
    refit = ["--b-frames", "2", "--c-nodes", "4", "--min-pixels", "3"]
    assert main(["scale", "-o", str(first), *refit, "--overwrite"]) == 0
    assert main(["merge", "-o", str(first), "--outlier-k", "4"]) == 0
    assert main(["map", "-o", str(first)]) == 0
    assert main(["process", "--no-report", *common, "-o", str(direct), *refit, "--outlier-k", "4"]) == 0
    for name in ("scale.nxs", "merged.nxs", "map.nxs"):
        a, b = _datasets(first / name), _datasets(direct / name)
        assert set(a) == set(b) and len(a) > 3, name
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    with h5py.File(first / "merged.nxs") as f:
        assert f["entry/merged/intensity"].size > 1000


def test_steps_one_by_one_and_their_missing_inputs(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["scale", "-o", str(out)]) == 1
    err = capsys.readouterr().err
    assert "experiment.nxs does not exist or is not a finished step file: run `gpudiffuse import`" in err
    assert not out.exists()
    assert main(["import", "--xds", str(tiny_dataset), "-o", str(out)]) == 0
    assert main(["integrate", "-o", str(out), "--device", "cpu"]) == 1
    assert "peaks.nxs does not exist or is not a finished step file: run `gpudiffuse find-peaks`" in \
        capsys.readouterr().err
    for step in (["find-peaks"], ["integrate", "--device", "cpu"], ["scale", "--scale", "isotropic"], ["merge"],
                 ["map"]):
        assert main([*step, "-o", str(out)]) == 0, step
    with h5py.File(out / "scale.nxs") as f:
        assert f["entry"].attrs["mode"] == "isotropic" and "model" not in f["entry"]
        factors = f["entry/frame_scale/batch_0"][()]
        assert factors.shape == (12,) and abs(factors.mean() - 1) < 1e-9
    with h5py.File(out / "map.nxs") as f:
        assert np.isfinite(f["entry/data/intensity"][()]).sum() > 1000
