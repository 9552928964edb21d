"""``gpudiffuse scale``: refit the scaling model of a processed folder."""

import h5py
import numpy as np

from gpudiffuse.cli import main
from gpudiffuse.experiment import read_experiment
from gpudiffuse.merge import merge
from gpudiffuse.pipeline import _read_integrate


def test_scale_refits_reports_and_refuses_to_overwrite(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["process", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu"]) == 0
    capsys.readouterr()
    original = (out / "scale.nxs").read_bytes()

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
    experiment = read_experiment(str(out / "experiment.nxs"))
    crystal = experiment.sweeps[0].crystal
    table = _read_integrate(str(out / "integrate.nxs"))["observations"]
    expected = merge(table, experiment.space_group, (3, 3, 3), crystal.A.T @ crystal.A)[1]["cc_half"]
    rows = stdout.split("unscaled    scaled\n")[1].splitlines()[:len(expected)]
    printed = np.array([float(r.split()[1]) for r in rows])
    np.testing.assert_allclose(printed, expected, atol=5e-5)


def test_scale_needs_a_processed_folder(tmp_path, capsys):
    assert main(["scale", "-o", str(tmp_path)]) == 1
    assert "integrate.nxs does not exist: run `gpudiffuse process` first" in capsys.readouterr().err
