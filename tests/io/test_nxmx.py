"""Eiger / NXmx data as beamlines write it: master + linked data files, pixel_mask, flags."""

import shutil

import h5py
import numpy as np
import pytest

from gpudiffuse.cli import main
from gpudiffuse.errors import GeometryError, ImageError
from gpudiffuse.experiment import ImportParameters, import_experiment
from gpudiffuse.geometry.dials import load_dials
from gpudiffuse.geometry.xds import load_xds
from gpudiffuse.io.images import read_image
from gpudiffuse.io.nxmx import master_of_template, open_master
from gpudiffuse.io.nxmx_writer import DEAD_BIT, GAP_BIT, USER_BIT
from gpudiffuse.masking.pixel import frame_valid

FLAG = 2**32 - 1


def merged(out):
    with h5py.File(out / "merged.nxs") as f:
        return {k: f["entry/merged"][k][()] for k in ("h", "k", "l", "n", "intensity", "sigma")}


@pytest.mark.parametrize("route", ["xds", "expt"])
def test_cbf_and_eiger_give_the_same_map(route, tiny_dataset, tiny_eiger, tmp_path, capsys):
    maps = {}
    for name, data in (("cbf", tiny_dataset), ("eiger", tiny_eiger)):
        geometry = ["--xds", str(data)] if route == "xds" else ["--expt", str(data / "experiments.expt")]
        out = tmp_path / name
        assert main(["process", "--no-report", *geometry, "-o", str(out), "--device", "cpu", "--scale", "none"]) == 0, \
            capsys.readouterr().err
        maps[name] = merged(out)
    for key in ("h", "k", "l", "n"):
        np.testing.assert_array_equal(maps["cbf"][key], maps["eiger"][key])
    for key in ("intensity", "sigma"):
        np.testing.assert_allclose(maps["eiger"][key], maps["cbf"][key], rtol=1e-9)
    assert len(maps["cbf"]["h"]) > 1000


def test_frames_and_flags_match_the_cbf_counts(tiny_dataset, tiny_eiger):
    master = open_master(str(tiny_eiger / "frames" / "sim_master.h5"))
    assert master.n_frames == 12 and len(master.data_files) == 2  # 10 frames per data file
    assert master.dtype == np.uint32 and master.saturation_value == 1048500 and master.count_time == 0.2
    for z in (0, 11):
        cbf = read_image(str(tiny_dataset / "frames" / f"frame_{z + 1:05d}.cbf"))
        eiger = read_image(master.path, z)
        np.testing.assert_array_equal(eiger[cbf >= 0], cbf[cbf >= 0])
        assert np.all(eiger[cbf < 0] == FLAG)
    dead = master.pixel_mask & (1 << DEAD_BIT) > 0
    assert dead.sum() == 20 and np.all(read_image(master.path, 3)[dead] == FLAG)


def _master_with_bits(tiny_eiger, tmp_path, bit, region):
    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    with h5py.File(data / "frames" / "sim_master.h5", "r+") as f:
        mask = f["entry/instrument/detector/pixel_mask"][()]
        mask[region] |= np.uint32(1 << bit)
        del f["entry/instrument/detector/pixel_mask"]
        f["entry/instrument/detector/pixel_mask"] = mask
    return data


@pytest.mark.parametrize("bit, label", [(GAP_BIT, "gap"), (DEAD_BIT, "dead"), (USER_BIT, "user-defined"),
                                        (4, "noisy")])
def test_every_pixel_mask_bit_masks(bit, label, tiny_eiger, tmp_path):
    region = (slice(40, 60), slice(100, 140))
    data = _master_with_bits(tiny_eiger, tmp_path, bit, region)
    experiment = import_experiment(ImportParameters(expt=(str(data / "experiments.expt"),)))
    mask = experiment.masks[0]
    assert not mask[region].any()
    assert mask[:30].mean() > 0.99  # elsewhere only the 20 dead pixels
    sources = dict(experiment.mask_sources[0])
    name = f"pixel_mask bit {bit} ({label})"
    assert sources[name] >= 800  # the 20 x 40 region (plus the dead pixels for bit 1)


def test_flagged_values_are_invalid_and_zero_counts_are_data(tiny_eiger):
    experiment = import_experiment(ImportParameters(expt=(str(tiny_eiger / "experiments.expt"),)))
    low, high = experiment.sweeps[0].panel.trusted_range
    assert low == 0.0 and high <= FLAG
    values = np.array([0, 1, 1048499, 1048500, FLAG], dtype=np.uint32)
    np.testing.assert_array_equal(frame_valid(values, (low, high)), [True, True, True, False, False])


def test_a_pixel_flagged_in_one_frame_is_dropped_from_that_frame_only(tiny_eiger, tmp_path):
    from gpudiffuse.grid import VoxelGrid
    from gpudiffuse.integration import IntegrationParameters, integrate_sweep, prepare_pixels
    from gpudiffuse.steps.limits import resolve_dmin

    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    totals = []
    for flagged in (False, True):
        if flagged:
            with h5py.File(data / "frames" / "sim_data_000001.h5", "r+") as f:
                f["entry/data/data"][3, 100, 200] = FLAG  # not in pixel_mask
        experiment = import_experiment(ImportParameters(expt=(str(data / "experiments.expt"),)))
        sweep, mask = experiment.sweeps[0], experiment.masks[0]
        assert mask[100, 200]
        dmin = resolve_dmin(experiment, None)
        grid = VoxelGrid.for_crystal(sweep.crystal.real_space_axes, dmin * 0.98, (3, 3, 3))
        pixels = prepare_pixels(sweep, mask, dmin)
        result = integrate_sweep(sweep, pixels, grid, None, None, IntegrationParameters(), "numpy")
        totals.append(int(result.diffuse.columns["pixels"].sum()))
    assert totals[0] - totals[1] == 1


def test_flag_value_is_invalid_even_with_a_huge_trusted_range(tiny_eiger, tmp_path):
    import json

    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    doc = json.loads((data / "experiments.expt").read_text())
    doc["detector"][0]["panels"][0]["trusted_range"] = [0, 1e12]
    (data / "experiments.expt").write_text(json.dumps(doc))
    assert load_dials(str(data / "experiments.expt"))[0].panel.trusted_range[1] == 1e12
    experiment = import_experiment(ImportParameters(expt=(str(data / "experiments.expt"),)))
    trusted = experiment.sweeps[0].panel.trusted_range
    assert trusted[1] == FLAG
    assert not frame_valid(np.array([FLAG], np.uint32), trusted)[0] and frame_valid(np.array([FLAG - 1], np.uint32),
                                                                                      trusted)[0]


def test_old_dials_lower_bound_still_means_zero_is_data(tiny_dataset):
    sweep = load_dials(str(tiny_dataset / "experiments.expt"))[0]   # trusted_range [-1, overload]
    assert sweep.panel.trusted_range[0] == 0.0


@pytest.mark.parametrize("template", ["frames/sim_??????.h5", "frames/sim_master.h5", "frames/sim_data_??????.h5"])
def test_xds_templates_of_eiger_data_read_the_master(template, tiny_eiger, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    text = (data / "XDS.INP").read_text().replace("frames/sim_??????.h5", template)
    (data / "XDS.INP").write_text(text)
    sweep = load_xds(str(data))[0]
    assert sweep.images[0].endswith("sim_master.h5") and sweep.image_indices == tuple(range(12))
    np.testing.assert_allclose(sweep.scan.exposure_times, 0.2)
    assert master_of_template("/x/run_000001.h5") == "/x/run_master.h5"


def test_single_file_indices_are_honoured(tiny_eiger, tmp_path):
    import json

    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    doc = json.loads((data / "experiments.expt").read_text())
    doc["imageset"][0]["single_file_indices"] = list(range(2, 12))
    doc["scan"][0]["image_range"] = [1, 10]
    (data / "experiments.expt").write_text(json.dumps(doc))
    sweep = load_dials(str(data / "experiments.expt"))[0]
    assert sweep.image_indices == tuple(range(2, 12))


def test_missing_truncated_or_mismatched_data_files_are_named(tiny_eiger, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(tiny_eiger, data)
    second = data / "frames" / "sim_data_000002.h5"
    second.rename(tmp_path / "moved.h5")
    with pytest.raises(ImageError, match="data file .*sim_data_000002.h5 is missing"):
        open_master(str(data / "frames" / "sim_master.h5"))
    code = main(["process", "--no-report", "--expt", str(data / "experiments.expt"), "-o", str(tmp_path / "out"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 1 and "sim_data_000002.h5 is missing" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    # truncated: the first half of the file only
    raw = (tmp_path / "moved.h5").read_bytes()
    second.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ImageError, match="sim_data_000002.h5"):
        open_master(str(data / "frames" / "sim_master.h5"))
    # a data file of another frame size
    with h5py.File(second, "w") as f:
        f["entry/data/data"] = np.zeros((2, 100, 487), np.uint32)
    with pytest.raises(ImageError, match="sim_data_000002.h5 holds 487x100 frames"):
        open_master(str(data / "frames" / "sim_master.h5"))
    with pytest.raises((GeometryError, ImageError)):
        load_xds(str(data))
