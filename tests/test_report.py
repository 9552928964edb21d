"""``gpudiffuse report``: every figure drawn for a processed simulated set (and, in test_snase, for
the SNase stills); each PNG a real picture; the HTML references only files that exist; the PDF
has a page per figure and the summary; the profile CSV holds the merged voxels' mean."""

import re

import h5py
import numpy as np
import pytest
from PIL import Image

from gpudiffuse.cli import main
from gpudiffuse.report.document import FIGURES


def check_report(folder, absolute=False):
    """The report files of FOLDER are complete and real (shared with test_snase and the absolute
    tests); the absolute-scale figure only when the folder is on the absolute scale."""
    html = (folder / "report.html").read_text()
    references = re.findall(r'(?:src|href)="([^"]+)"', html)
    stems = [stem for stem, *_ in FIGURES if absolute or stem != "absolute_scale"]
    assert len(references) == len(stems) + 2
    assert (folder / "report" / "absolute_scale.png").exists() == absolute
    for reference in references:
        assert (folder / reference).is_file(), reference
    for stem in stems:
        image = np.asarray(Image.open(folder / "report" / f"{stem}.png").convert("L"), dtype=np.float64)
        assert image.shape[0] > 400 and image.shape[1] > 800, stem
        assert image.std() > 10, f"{stem} looks blank"
    pdf = (folder / "report.pdf").read_bytes()
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == len(stems) + 1
    return html


def test_process_writes_a_report_with_every_figure(tiny_processed):
    html = check_report(tiny_processed)
    assert "I 2 2 2" in html and "counts / (s sr), relative scale" in html
    for step in ("import", "integrate", "scale", "merge", "map"):  # time per step in the summary
        assert re.search(rf"\n{step}\s+\d+\.\d\d ", html), step
    # the profile as numbers: ⟨I⟩ of the merged voxels per |s| bin
    profile = np.loadtxt(tiny_processed / "report" / "radial_profile.csv", delimiter=",", skiprows=1)
    with h5py.File(tiny_processed / "merged.nxs") as f:
        s, intensity = f["entry/merged/s"][()], f["entry/merged/intensity"][()]
    width = profile[1, 0] - profile[0, 0]
    for row in profile[profile[:, 3] > 0][::10]:
        inside = (s >= row[0] - width / 2 - 1e-12) & (s < row[0] + width / 2 - 1e-12)
        assert inside.sum() == row[3]
        assert row[2] == pytest.approx(intensity[inside].mean(), rel=1e-9)


def test_report_subcommand_replaces_its_own_report_only(processed_copy, capsys):
    from gpudiffuse.steps.report import _ours

    assert _ours(str(processed_copy))  # the report process wrote: replaced by `report` without asking
    (processed_copy / "report.html").write_text("<html>my own notes</html>")
    assert not _ours(str(processed_copy))
    assert main(["report", str(processed_copy)]) == 1
    assert "were not written by gpudiffuse; pass --overwrite" in capsys.readouterr().err
    assert (processed_copy / "report.html").read_text() == "<html>my own notes</html>"
    before = (processed_copy / "report" / "statistics.png").stat().st_mtime_ns
    assert main(["report", str(processed_copy), "--overwrite"]) == 0
    assert "report.html" in capsys.readouterr().out
    assert (processed_copy / "report" / "statistics.png").stat().st_mtime_ns > before
    check_report(processed_copy)
    # a step written again makes the report out of date: it goes with the step files made from it
    assert main(["merge", str(processed_copy), "--outlier-k", "4", "--overwrite"]) == 0
    assert not (processed_copy / "report.html").exists() and not (processed_copy / "report").exists()
    assert not (processed_copy / "map.nxs").exists() and (processed_copy / "merged.nxs").exists()


def test_report_of_an_unscaled_run_without_bragg_mask(tiny_dataset, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["process", "--xds", str(tiny_dataset), "-o", str(out), "--device", "cpu", "--scale", "none",
                 "--no-bragg-mask"]) == 0
    check_report(out)
    assert main(["report", str(tmp_path / "missing")]) == 1
    assert "experiment.nxs does not exist" in capsys.readouterr().err
