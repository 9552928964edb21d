"""The report as files: ``OUT/report/*.png`` (one per figure), ``OUT/report/radial_profile.csv``,
``OUT/report.html`` (no external resources; it shows the PNGs of ``OUT/report/`` beside it) and
``OUT/report.pdf`` (the same figures and the summary, one per page)."""

from __future__ import annotations

import html
import json
import os
import shutil
import textwrap
import time

import numpy as np
from PIL import Image
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from .. import __version__
from ..io.nexus import atomic_file
from ..steps.keys import STEP_FILES
from .data import radial_profile
from .detector_figures import mask_figure, scale_figure
from .figures import (absolute_figure, completeness, half_integer_sections, map_sections, profile_figure,
                      statistics_figure)

__all__ = ["FIGURES", "write_report", "GENERATOR"]

GENERATOR = "gpudiffuse report"
DPI = 110
# file stem, heading, what the reader should look for, the figure
FIGURES = (
    ("map_sections", "Map sections through the origin",
     "The total map and its anisotropic part (each voxel minus the mean of its |s| shell). Diffuse streaks and "
     "halos show in the lower row; Bragg positions, masked, are white.", map_sections),
    ("half_integer_sections", "Sections between Bragg layers",
     "Planes halfway between the integer layers (the nearest grid plane when ndiv is odd): diffuse scattering "
     "without Bragg peaks.", half_integer_sections),
    ("radial_profile", "Isotropic profile",
     "⟨I⟩ of the merged voxels against |s|: expect a smooth curve with the water ring near 3.2 Å.",
     profile_figure),
    ("statistics", "Statistics per shell", "CC½ of random half-sets before and after scaling, CC*, ⟨I/σ⟩, "
     "and the completeness of the symmetry-expanded map.", statistics_figure),
    ("scale_model", "Scaling model", "The fitted factors and offset with their uncertainties, and χ² per "
     "outlier round.", scale_figure),
    ("absolute_scale", "Absolute scale", "k(S) = I_theo(S)/I_obs(S) from the sum rule (DESIGN §12) and the shell "
     "means it rests on; only when the folder holds absolute.nxs.", absolute_figure),
    ("masks", "Masks on one frame", "The frame's counts, the static pixel mask and the pixels the Bragg model "
     "masks on it; with the statistical filter, which excludes whole voxels after the pass, the share of "
     "voxel-wedge rows it excluded per shell.", mask_figure),
)


def write_report(data, out: str) -> dict:
    """Draw every figure and write the report files; returns {"html", "pdf", "figures": [paths], "seconds"}."""
    folder = os.path.join(out, "report")
    if os.path.isdir(folder):
        shutil.rmtree(folder)  # the figures of an earlier report (run_report checked it is one)
    os.makedirs(folder)
    start = time.perf_counter()
    figures, rendered = [], []
    for stem, heading, caption, draw in FIGURES:
        figure = draw(data)
        if figure is None:
            continue
        pixels = _render(figure)
        path = os.path.join(folder, f"{stem}.png")
        # drawn once: the PNG and the PDF page are the same pixels (a second vector rendering of
        # every figure would double the report's time)
        Image.fromarray(pixels).save(path, compress_level=1)
        figures.append(path)
        rendered.append((pixels, heading, caption, stem))
    summary = summary_lines(data)
    profile = radial_profile(data.merged.merged)
    np.savetxt(os.path.join(folder, "radial_profile.csv"),
               np.column_stack([profile["s"], 1 / profile["s"], profile["mean_I"], profile["n"]]),
               delimiter=",", header=f"s (1/angstrom),d (angstrom),mean I ({data.merged.units}),voxels",
               comments="")
    pdf_path, html_path = os.path.join(out, "report.pdf"), os.path.join(out, "report.html")
    with atomic_file(pdf_path, overwrite=True) as tmp:
        with PdfPages(tmp, metadata={"Creator": f"{GENERATOR} {__version__}", "Title": "gpudiffuse report"}) as pdf:
            pdf.savefig(_text_page(summary))
            for pixels, *_ in rendered:
                page = Figure(figsize=(pixels.shape[1] / DPI, pixels.shape[0] / DPI), dpi=DPI)
                page.figimage(pixels, resize=False)
                pdf.savefig(page, dpi=DPI)
    with atomic_file(html_path, overwrite=True) as tmp:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(_html(data, rendered, summary))
    return {"html": html_path, "pdf": pdf_path, "figures": figures, "seconds": time.perf_counter() - start}


def _render(figure) -> np.ndarray:
    """The figure drawn once at DPI: (rows, columns, 4) uint8 RGBA."""
    figure.set_dpi(DPI)
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba()).copy()


def _units_sentence(data) -> str:
    if data.absolute is None:
        return f"{data.merged.units} (no absolute scale applied)"
    a = data.absolute.scale
    return (f"{data.merged.units}: k = {a.k:.5g} at S_c = {a.s_cutoff:.3f} Å⁻¹ from {data.absolute.inventory_summary}; "
            "I_inc(|s|) subtracted")


def summary_lines(data) -> list[str]:
    """Inputs, parameters per step, device and timings, from the step files' provenance."""
    experiment, provenance = data.experiment, data.provenance
    lines = [f"folder: {os.path.abspath(data.out)}"]
    command = provenance.get("map", {}).get("command_line") or provenance.get("import", {}).get("command_line")
    if command:
        lines.append(f"command: {command}")
    for sweep in experiment.sweeps:
        lines.append(f"sweep {sweep.batch}: {sweep.source}, {sweep.scan.num_frames} frames, "
                     f"{sweep.panel.image_size[0]}x{sweep.panel.image_size[1]} px, λ = {sweep.beam.wavelength:.4f} Å")
    cell = experiment.sweeps[0].crystal.unit_cell
    lines.append(f"cell {' '.join(f'{x:.2f}' for x in cell.parameters)} Å/°, space group {experiment.space_group.hm}, "
                 f"ndiv {' '.join(str(n) for n in data.map['ndiv'])}, d_min {data.dmin:.3f} Å")
    device = next((p.get("device_name") or p.get("device") for p in provenance.values()
                   if p.get("device_name") or p.get("device")), None)
    if device:
        lines.append(f"device: {device}")
    lines.append("")
    lines.append("step         seconds  parameters")
    for step in STEP_FILES:
        if step not in provenance:
            continue
        key = provenance[step]["parameters"]
        elapsed = provenance[step].get("elapsed_s")
        own = ", ".join(f"{name}={json.dumps(value)}" for name, value in _flat(key.get("parameters") or {}))
        wrapped = textwrap.wrap(own or "(none)", 120) or [""]
        lines.append(f"{step:<12} {'' if elapsed is None else f'{elapsed:7.2f}':>7}  {wrapped[0]}")
        lines += [" " * 22 + more for more in wrapped[1:]]
    merged = data.merged
    lines += ["", f"merged {len(merged.merged['intensity'])} ASU voxels, {merged.rejected} outliers rejected, "
              f"scale mode {merged.scale_mode}"]
    integrate = provenance.get("integrate", {}).get("parameters", {}).get("parameters", {})
    if integrate.get("bragg_mask"):
        line = f"Bragg mask: {integrate['bragg_mask']}"
        if data.bragg_filter is not None:
            f = data.bragg_filter
            line += (f"; statistical filter on ndiv {' '.join(map(str, f['filter_ndiv']))}, "
                     f"{int(f['per_wedge']['removed'].sum())} filter voxel-wedges removed by the walk and "
                     f"{int(f['per_wedge']['overflow'].sum())} with counts above c_max over "
                     f"{len(f['per_wedge']['wedge'])} wedges, {f['moved_rows']} voxel-wedge rows moved")
        lines.append(line)
    return lines


def _flat(parameters: dict, prefix: str = ""):
    """(dotted name, value) of a nested parameter dict, leaves only."""
    for name, value in sorted(parameters.items()):
        if isinstance(value, dict):
            yield from _flat(value, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", value


def _text_page(lines) -> Figure:
    figure = Figure(figsize=(11.7, 8.3))
    FigureCanvasAgg(figure)
    figure.text(0.03, 0.97, "gpudiffuse report\n\n" + "\n".join(lines), va="top", ha="left", family="monospace",
                fontsize=7, wrap=True)
    return figure


def _statistics_table(data) -> str:
    stats = data.merged.statistics
    complete = completeness(data)
    columns = [("d_max (Å)", "d_max", "{:.2f}"), ("d_min (Å)", "d_min", "{:.2f}"), ("voxels", "n", "{:.0f}"),
               ("⟨I⟩", "mean_I", "{:.4g}"), ("⟨I/σ⟩", "mean_I_over_sigma", "{:.1f}"), ("CC½", "cc_half", "{:.4f}"),
               ("CC*", "cc_star", "{:.4f}"), ("R-split", "r_split", "{:.4f}")]
    if "cc_half_unscaled" in stats:
        columns.append(("CC½ unscaled", "cc_half_unscaled", "{:.4f}"))
    head = "".join(f"<th>{html.escape(name)}</th>" for name, _, _ in columns) + "<th>completeness</th>"
    rows = []
    for i in range(len(stats["n"])):
        cells = "".join(f"<td>{fmt.format(stats[key][i])}</td>" for _, key, fmt in columns)
        rows.append(f"<tr>{cells}<td>{100 * complete[i]:.1f} %</td></tr>")
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _html(data, rendered, summary) -> str:
    sections = []
    for _, heading, caption, stem in rendered:
        sections.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(caption)}</p>"
                        f'<img src="report/{stem}.png" alt="{html.escape(heading)}">')
        if stem == "statistics":
            sections.append(_statistics_table(data))
    style = ("body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}img{max-width:100%}"
             "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #999;padding:2px 6px;"
             "text-align:right}pre{background:#f4f4f4;padding:0.5em;overflow-x:auto}")
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><meta name="generator" content="{GENERATOR} '
            f'{__version__}"><title>gpudiffuse report: {html.escape(os.path.abspath(data.out))}</title>'
            f"<style>{style}</style></head><body><h1>gpudiffuse report</h1>"
            f"<p>Intensities in {html.escape(_units_sentence(data))}. "
            f'The same figures: <a href="report.pdf">report.pdf</a>; the profile as numbers: '
            f'<a href="report/radial_profile.csv">report/radial_profile.csv</a>.</p>'
            f"<pre>{html.escape(chr(10).join(summary))}</pre>{''.join(sections)}</body></html>\n")
