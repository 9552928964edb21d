"""Files of a simulated dataset in the formats beamlines and processing programs write: Pilatus
CBF frames with a mini-header or an Eiger/NXmx master with data files, XDS.INP + GXPARM.XDS and
a DIALS experiment list (the geometry of :class:`gpudiffuse.simulate.SimulatedModel`).
"""

from __future__ import annotations

import json
import os

import gemmi
import numpy as np

__all__ = ["frame_name", "write_cbf", "eiger_writer", "write_xds", "write_dials"]


def frame_name(params, sweep, z):
    if params.n_sweeps == 1:
        return f"frame_{z + 1:05d}.cbf"
    return f"sweep{sweep + 1}_{z + 1:05d}.cbf"


def write_cbf(path, data, params, model, z, phi_start):
    from fabio.cbfimage import CbfImage  # noqa: PLC0415

    nx, ny = params.image_size
    header = "\r\n".join([
        "# Detector: PILATUS (simulated by gpudiffuse), S/N 0-000",
        f"# Pixel_size {params.pixel_size * 1e-3:.6g} m x {params.pixel_size * 1e-3:.6g} m",
        f"# Silicon sensor, thickness {params.thickness * 1e-3:.6f} m",
        f"# Exposure_time {params.exposure:.7f} s",
        f"# Exposure_period {params.exposure:.7f} s",
        f"# Count_cutoff {params.overload} counts",
        f"# Wavelength {params.wavelength:.5f} A",
        f"# Detector_distance {params.distance * 1e-3:.5f} m",
        f"# Beam_xy ({model.orgx - 1:.2f}, {model.orgy - 1:.2f}) pixels",
        f"# Start_angle {phi_start + z * params.dphi:.4f} deg.",
        f"# Angle_increment {params.dphi:.4f} deg.",
        "",
    ])
    CbfImage(data=data, header={"_array_data.header_convention": "PILATUS_1.2",
                                "_array_data.header_contents": header}).write(path)


def _eiger_prefix(params, sweep):
    return "sim" if params.n_sweeps == 1 else f"sweep{sweep + 1}"


def eiger_writer(outdir, params, sweep, gaps, dead):
    from .io.nxmx_writer import DEAD_BIT, GAP_BIT, EigerWriter  # noqa: PLC0415

    pixel_mask = np.where(gaps, np.uint32(1 << GAP_BIT), np.uint32(0))
    pixel_mask.ravel()[dead] |= np.uint32(1 << DEAD_BIT)
    return EigerWriter(os.path.join(outdir, "frames"), _eiger_prefix(params, sweep), params.n_frames, gaps.shape,
                       pixel_mask, params.overload, params.exposure, params.pixel_size, params.thickness)


def write_xds(outdir, params, model, image_format="cbf"):
    nx, ny = params.image_size
    ex, ey, en = model.detector_axes
    sg = gemmi.SpaceGroup(params.space_group)
    inp = [
        "! simulated by gpudiffuse.simulate",
        "JOB= XYCORR INIT COLSPOT IDXREF DEFPIX INTEGRATE CORRECT",
        ("DETECTOR=PILATUS" if image_format == "cbf" else "DETECTOR=EIGER")
        + "  MINIMUM_VALID_PIXEL_VALUE=0  OVERLOAD= %d" % params.overload,
        "NX= %d NY= %d  QX= %.6f  QY= %.6f" % (nx, ny, params.pixel_size, params.pixel_size),
        "SENSOR_THICKNESS= %.4f" % params.thickness,
        "DIRECTION_OF_DETECTOR_X-AXIS= %.8f %.8f %.8f" % tuple(ex),
        "DIRECTION_OF_DETECTOR_Y-AXIS= %.8f %.8f %.8f" % tuple(ey),
        "ORGX= %.3f ORGY= %.3f  ! nominal header values" % (model.orgx + 0.7, model.orgy - 0.4),
        "DETECTOR_DISTANCE= %.3f" % (params.distance + 0.5),
        "ROTATION_AXIS= 1 0 0",
        "OSCILLATION_RANGE= %.4f" % params.dphi,
        "STARTING_ANGLE= %.4f  STARTING_FRAME= 1" % params.phi0,
        "X-RAY_WAVELENGTH= %.6f" % params.wavelength,
        "INCIDENT_BEAM_DIRECTION= 0 0 1",
        "FRACTION_OF_POLARIZATION= 0.99",
        "POLARIZATION_PLANE_NORMAL= 0 1 0",
        "SPACE_GROUP_NUMBER= %d" % sg.number,
        "UNIT_CELL_CONSTANTS= %.3f %.3f %.3f %.2f %.2f %.2f" % params.cell,
        ("NAME_TEMPLATE_OF_DATA_FRAMES= frames/frame_?????.cbf" if image_format == "cbf" else
         "NAME_TEMPLATE_OF_DATA_FRAMES= frames/sim_??????.h5  ! read with the durin plugin"),
        "DATA_RANGE= 1 %d" % params.n_frames,
        *([] if image_format == "cbf" else ["LIB= /usr/local/lib/durin-plugin.so"]),
        "TRUSTED_REGION= 0.0 1.5",
        "UNTRUSTED_RECTANGLE= %d %d %d %d" % (nx // 2 - 3, nx // 2 + 3, ny - 6, ny),
    ]
    with open(os.path.join(outdir, "XDS.INP"), "w") as f:
        f.write("\n".join(inp) + "\n")
    a, b, c = model.real_axes
    cell = params.cell
    lines = [
        " XPARM.XDS    VERSION Jan 10, 2026  (gpudiffuse simulator)",
        "%6d %13.4f %9.4f %9.6f %9.6f %9.6f" % (1, params.phi0, params.dphi, *model.axis),
        "%15.6f %15.6f %15.6f %15.6f" % (params.wavelength, *(model.beam / params.wavelength)),
        "%6d %11.4f %11.4f %11.4f %7.3f %7.3f %7.3f" % (sg.number, *cell),
        "%15.6f %15.6f %15.6f" % tuple(a),
        "%15.6f %15.6f %15.6f" % tuple(b),
        "%15.6f %15.6f %15.6f" % tuple(c),
        "%10d %10d %10d %11.6f %11.6f" % (1, nx, ny, params.pixel_size, params.pixel_size),
        "%15.6f %15.6f %15.6f" % (model.orgx, model.orgy, params.distance),
        "%15.9f %15.9f %15.9f" % tuple(ex),
        "%15.9f %15.9f %15.9f" % tuple(ey),
        "%15.9f %15.9f %15.9f" % tuple(en),
        "%10d %10d %10d %10d %10d" % (1, 1, nx, 1, ny),
        "%8.2f %8.2f %8.2f %9.5f %9.5f %9.5f %9.5f %9.5f %9.5f" % (0, 0, 0, 1, 0, 0, 0, 1, 0),
    ]
    with open(os.path.join(outdir, "GXPARM.XDS"), "w") as f:
        f.write("\n".join(lines) + "\n")


def write_dials(outdir, params, model, image_format="cbf"):
    nx, ny = params.image_size
    ex, ey, en = model.detector_axes
    # corner of pixel (0, 0) in the XDS frame: X = Y = 0.5
    origin = params.distance * en + (0.5 - model.orgx) * params.pixel_size * ex + (0.5 - model.orgy) * params.pixel_size * ey
    a, b, c = model.real_axes
    sg = gemmi.SpaceGroup(params.space_group)
    sweeps = range(params.n_sweeps)
    if image_format == "eiger":
        imagesets = [{"__id__": "ImageSequence", "template": f"frames/{_eiger_prefix(params, j)}_master.h5",
                      "single_file_indices": list(range(params.n_frames))} for j in sweeps]
    else:
        templates = (["frames/frame_#####.cbf"] if params.n_sweeps == 1
                     else [f"frames/sweep{j + 1}_#####.cbf" for j in sweeps])
        imagesets = [{"__id__": "ImageSequence", "template": t} for t in templates]
    # the lower end of trusted_range: DIALS >= 3.13 writes the lowest valid value (0 for an Eiger),
    # older versions -1 meaning "above -1" (both mean zero counts are data)
    low = 0.0 if image_format == "eiger" else -1.0
    doc = {
        "__id__": "ExperimentList",
        "experiment": [{"__id__": "Experiment", "identifier": f"sim{j}", "beam": 0, "detector": 0, "goniometer": 0,
                        "scan": j, "crystal": 0, "imageset": j} for j in sweeps],
        "imageset": imagesets,
        "beam": [{"direction": list(-model.beam), "wavelength": params.wavelength,
                  "polarization_normal": [0.0, 1.0, 0.0], "polarization_fraction": 0.99}],
        "detector": [{"hierarchy": {"origin": [0.0, 0.0, 0.0], "fast_axis": [1.0, 0.0, 0.0],
                                    "slow_axis": [0.0, 1.0, 0.0], "children": [{"panel": 0}]},
                      "panels": [{"name": "Panel", "type": "SENSOR_PAD", "origin": list(origin),
                                  "fast_axis": list(ex), "slow_axis": list(ey),
                                  "pixel_size": [params.pixel_size, params.pixel_size], "image_size": [nx, ny],
                                  "trusted_range": [low, float(params.overload)], "thickness": params.thickness,
                                  "material": "Si", "mask": []}]}],
        "goniometer": [{"rotation_axis": list(model.axis), "fixed_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                        "setting_rotation": [1, 0, 0, 0, 1, 0, 0, 0, 1]}],
        "scan": [{"image_range": [1, params.n_frames],
                  "oscillation": [params.phi0 + j * params.sweep_phi_offset, params.dphi],
                  "exposure_time": [params.exposure] * params.n_frames, "batch_offset": 0} for j in sweeps],
        "crystal": [{"__id__": "crystal", "real_space_a": list(a), "real_space_b": list(b), "real_space_c": list(c),
                     "space_group_hall_symbol": sg.hall}],
    }
    with open(os.path.join(outdir, "experiments.expt"), "w") as f:
        json.dump(doc, f, indent=1)
