"""``gpudiffuse scale``: refit the scaling model of a processed folder."""

import h5py
import numpy as np

from gpudiffuse.cli import main

from cli_helpers import folder_cc_half, printed_unscaled_cc_half


def test_scale_refits_reports_and_refuses_to_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["process", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu"]) == 0
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

    assert main(["scale", "-o", str(out), "--scale-method", "alternating"]) == 1
    assert "scale.nxs already exists; pass --overwrite" in capsys.readouterr().err
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


def test_scale_needs_a_processed_folder(tmp_path, capsys):
    assert main(["scale", "-o", str(tmp_path)]) == 1
    assert "integrate.nxs does not exist: run `gpudiffuse process` first" in capsys.readouterr().err
