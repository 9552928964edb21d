"""The import command end to end, and its answers to bad input (message + no output left)."""

import json
import os

from gpudiffuse.cli import build_parser, main


def run_import(capsys, *args):
    code = main(["import", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_xds_writes_experiment_and_summary(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, _ = run_import(capsys, "--xds", str(tiny_dataset), "-o", str(out))
    assert code == 0
    assert (out / "experiment.nxs").is_file()
    for word in ("unit cell", "I 2 2 2", "wavelength", "Pilatus", "12 frames", "resolution", "masked"):
        assert word in stdout
    from gpudiffuse.experiment import read_experiment

    exp = read_experiment(str(out / "experiment.nxs"))
    assert exp.sweeps[0].scan.num_frames == 12
    assert exp.masks[0].shape == (195, 487) and not exp.masks[0][194, 243]  # untrusted rectangle
    # the same import again reuses the file; another one does not overwrite it without being asked
    before = (out / "experiment.nxs").stat().st_mtime_ns
    assert run_import(capsys, "--xds", str(tiny_dataset), "-o", str(out))[0] == 0
    code, _, err = run_import(capsys, "--xds", str(tiny_dataset), "-o", str(out), "--mask-chip-borders")
    assert code == 1 and "mask_chip_borders); pass --overwrite" in err
    assert (out / "experiment.nxs").stat().st_mtime_ns == before


def test_parser_needs_no_data():
    args = build_parser().parse_args(["import", "--expt", "a.expt", "b.expt", "-o", "x"])
    assert args.expt == ["a.expt", "b.expt"] and args.xds is None


def _expect_failure(capsys, tmp_path, args, *fragments, code_wanted=1):
    out = tmp_path / "out"
    code, _, err = run_import(capsys, *args, "-o", str(out))
    assert code == code_wanted, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists(), "no partial output may be left behind"


def test_missing_xds_inp(tiny_copy, tmp_path, capsys):
    os.remove(tiny_copy / "XDS.INP")
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "XDS.INP not found", str(tiny_copy))


def test_missing_xparm(tiny_copy, tmp_path, capsys):
    os.remove(tiny_copy / "GXPARM.XDS")
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "neither GXPARM.XDS nor XPARM.XDS")


def test_malformed_keyword(tiny_copy, tmp_path, capsys):
    inp = tiny_copy / "XDS.INP"
    inp.write_text(inp.read_text().replace("DATA_RANGE= 1 12", "DATA_RANGE= 1 twelve"))
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "XDS.INP", "DATA_RANGE= has a malformed value")


def test_template_matching_no_files(tiny_copy, tmp_path, capsys):
    inp = tiny_copy / "XDS.INP"
    inp.write_text(inp.read_text().replace("frames/frame_?????.cbf", "frames/nothing_?????.cbf"))
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "nothing_?????.cbf", "matches no files")


def test_image_size_not_matching_geometry(tiny_copy, tmp_path, capsys):
    for name in ("XDS.INP",):
        path = tiny_copy / name
        path.write_text(path.read_text().replace("NX= 487 NY= 195", "NX= 487 NY= 194"))
    xparm = tiny_copy / "GXPARM.XDS"
    xparm.write_text(xparm.read_text().replace("       487        195", "       487        194"))
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "frame_00001.cbf is 487x195", "487x194")


def test_corrupt_cbf(tiny_copy, tmp_path, capsys):
    frame = tiny_copy / "frames" / "frame_00001.cbf"
    frame.write_bytes(frame.read_bytes()[:5000])
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], "frame_00001.cbf")


def test_unknown_space_group(tiny_copy, tmp_path, capsys):
    path = tiny_copy / "experiments.expt"
    doc = json.loads(path.read_text())
    doc["crystal"][0]["space_group_hall_symbol"] = " Q 9 z"
    path.write_text(json.dumps(doc))
    _expect_failure(capsys, tmp_path, ["--expt", str(path)], "unknown space group")


def test_json_that_is_not_an_experiment_list(tmp_path, capsys):
    path = tmp_path / "refl.json"
    path.write_text('{"__id__": "reflection_table"}')
    _expect_failure(capsys, tmp_path, ["--expt", str(path)], str(path), "not a DIALS ExperimentList")


def test_both_or_neither_geometry_source(tiny_dataset, tmp_path, capsys):
    _expect_failure(capsys, tmp_path, [], "exactly one geometry source", code_wanted=2)  # a usage error


def _edit_line(path, number, old, new):
    lines = path.read_text().splitlines()
    assert old in lines[number - 1]
    lines[number - 1] = lines[number - 1].replace(old, new)
    path.write_text("\n".join(lines) + "\n")


GXPARM_FAULTS = [  # (line, old, new, message): the tiny dataset's GXPARM.XDS, I222 40×48×56 Å
    (5, "37.568352        6.030211      -12.339186", "0.0 0.0 0.0", "crystal axes a, b, c are zero"),
    (6, "-16.460359       17.631578      -41.499205", "75.136704 12.060422 -24.678372",
     "crystal axes a, b, c are zero, not finite or (nearly) coplanar"),
    (9, "80.000000", "nan", "detector origin (distance and beam centre) is not finite"),
    (2, "0.5000", "inf", "oscillation (start, width) is not finite"),
    (4, "    23 ", "   195 ", "does not suit space group P 2 3 (195)"),
]


def test_geometry_faults_are_named_with_their_file(tiny_copy, tmp_path, capsys):
    gxparm = tiny_copy / "GXPARM.XDS"
    original = gxparm.read_text()
    for line, old, new, message in GXPARM_FAULTS:
        gxparm.write_text(original)
        _edit_line(gxparm, line, old, new)
        _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], str(gxparm), message)


def test_sweeps_with_different_cells_are_not_merged(snase_dir):
    import dataclasses

    import pytest

    from gpudiffuse.errors import GeometryError
    from gpudiffuse.experiment import check_cells
    from gpudiffuse.geometry.dials import load_dials
    from gpudiffuse.geometry.model import Crystal

    files = sorted((snase_dir / "experiments").glob("experiments_for_lunus_*.json"))[:2]
    sweeps = [s for f in files for s in load_dials(str(f))]
    check_cells(sweeps)  # the real stills agree
    crystal = sweeps[1].crystal
    stretched = Crystal.from_real_space(*(crystal.real_space_axes * 1.25), crystal.space_group)
    bad = [sweeps[0], dataclasses.replace(sweeps[1], crystal=stretched)]
    with pytest.raises(GeometryError, match=r"differs from the first sweep's .* by 25\.0 %"):
        check_cells(bad)


def test_a_frame_without_exposure_time_is_named_not_given_one_second(tiny_copy, tmp_path, capsys):
    frame = sorted((tiny_copy / "frames").glob("*.cbf"))[2]
    raw = frame.read_bytes()
    start = raw.index(b"# Exposure_time")
    end = raw.index(b"\n", start) + 1
    frame.write_bytes(raw[:start] + raw[end:])
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], str(frame),
                    "no Exposure_time in the header, while the other frames have one")
    frame.write_bytes(raw[:start] + b"# Exposure_time -0.2 s\r\n" + raw[end:])
    _expect_failure(capsys, tmp_path, ["--xds", str(tiny_copy)], str(frame), "Exposure_time -0.2 s in the header")


def test_duplicate_inputs_are_refused(snase_dir, tmp_path, capsys):
    first = sorted((snase_dir / "experiments").glob("experiments_for_lunus_*.json"))[0]
    _expect_failure(capsys, tmp_path, ["--expt", str(first), str(first)], f"{first} is given twice")
    copy = tmp_path / "copy.json"  # another file naming the same image
    copy.write_text(first.read_text().replace('"../images/', f'"{snase_dir / "images"}/'))
    _expect_failure(capsys, tmp_path, ["--expt", str(first), str(copy)], "snc_newhead_00001.img appears in two sweeps")
