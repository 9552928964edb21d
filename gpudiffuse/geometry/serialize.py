"""Sweeps to and from plain dicts (JSON) and NeXus groups.

The NeXus file carries readable datasets (NXbeam, NXdetector, NXsample-like fields with
units) for people and other programs, and the exact model as a JSON string for reading back.
"""

from __future__ import annotations

import json

import numpy as np

from .model import Beam, Crystal, Goniometer, Panel, Scan, Sweep

__all__ = ["sweep_to_dict", "sweep_from_dict", "write_sweep_group", "read_sweeps"]


def sweep_to_dict(sweep: Sweep) -> dict:
    b, p, g, s, c = sweep.beam, sweep.panel, sweep.goniometer, sweep.scan, sweep.crystal
    return {
        "beam": {"direction": b.direction.tolist(), "wavelength": b.wavelength,
                 "polarization_fraction": b.polarization_fraction,
                 "polarization_normal": b.polarization_normal.tolist()},
        "panel": {"origin": p.origin.tolist(), "fast_axis": p.fast_axis.tolist(), "slow_axis": p.slow_axis.tolist(),
                  "pixel_size": list(p.pixel_size), "image_size": list(p.image_size), "thickness": p.thickness,
                  "material": p.material, "trusted_range": list(p.trusted_range), "name": p.name},
        "goniometer": {"rotation_axis": g.rotation_axis.tolist(), "fixed_rotation": g.fixed_rotation.tolist(),
                       "setting_rotation": g.setting_rotation.tolist()},
        "scan": {"image_range": list(s.image_range), "oscillation": list(s.oscillation),
                 "exposure_times": s.exposure_times.tolist()},
        "crystal": {"A": c.A.tolist(), "space_group": c.space_group.hm,
                    "A_per_frame": None if c.A_per_frame is None else c.A_per_frame.tolist()},
        "images": list(sweep.images),
        "image_indices": None if sweep.image_indices is None else list(sweep.image_indices),
        "untrusted": [[kind, list(params)] for kind, params in sweep.untrusted],
        "batch": sweep.batch,
        "source": sweep.source,
    }


def sweep_from_dict(d: dict) -> Sweep:
    crystal = d["crystal"]
    return Sweep(
        beam=Beam(**d["beam"]),
        panel=Panel(**d["panel"]),
        goniometer=Goniometer(**{k: np.asarray(v) for k, v in d["goniometer"].items()}),
        scan=Scan(**d["scan"]),
        crystal=Crystal(A=np.asarray(crystal["A"]), space_group=crystal["space_group"],
                        A_per_frame=None if crystal["A_per_frame"] is None else np.asarray(crystal["A_per_frame"])),
        images=tuple(d["images"]),
        image_indices=None if d["image_indices"] is None else tuple(d["image_indices"]),
        untrusted=tuple((kind, tuple(params)) for kind, params in d["untrusted"]),
        batch=d["batch"],
        source=d["source"],
    )


def write_sweep_group(parent, name: str, sweep: Sweep, pixel_mask: np.ndarray):
    """Write one sweep as an NXentry-like subgroup of ``parent``."""
    g = parent.create_group(name)
    g.attrs["NX_class"] = "NXsubentry"
    g.attrs["model_json"] = json.dumps(sweep_to_dict(sweep))
    beam = g.create_group("beam")
    beam.attrs["NX_class"] = "NXbeam"
    beam["incident_wavelength"] = sweep.beam.wavelength
    beam["incident_wavelength"].attrs["units"] = "angstrom"
    beam["direction"] = sweep.beam.direction
    det = g.create_group("detector")
    det.attrs["NX_class"] = "NXdetector"
    for key in ("origin", "fast_axis", "slow_axis"):
        det[key] = getattr(sweep.panel, key)
    det["origin"].attrs["units"] = "mm"
    det["x_pixel_size"], det["y_pixel_size"] = sweep.panel.pixel_size
    det["sensor_thickness"] = sweep.panel.thickness
    det["sensor_material"] = sweep.panel.material
    det.create_dataset("pixel_mask", data=(~pixel_mask).astype(np.uint8), compression="gzip", shuffle=True)
    det["pixel_mask"].attrs["meaning"] = "non-zero: pixel excluded (gaps, untrusted, beamstop, negative)"
    sample = g.create_group("sample")
    sample.attrs["NX_class"] = "NXsample"
    sample["unit_cell"] = np.array(sweep.crystal.unit_cell.parameters)
    sample["space_group"] = sweep.crystal.space_group.hm
    sample["setting_matrix_A"] = sweep.crystal.A
    sample["setting_matrix_A"].attrs["units"] = "1/angstrom"
    scan = g.create_group("scan")
    scan["image_range"] = np.array(sweep.scan.image_range)
    scan["oscillation"] = np.array(sweep.scan.oscillation)
    scan["oscillation"].attrs["units"] = "degree"
    scan["exposure_time"] = sweep.scan.exposure_times
    scan["images"] = np.array(sweep.images, dtype=object)
    return g


def read_sweeps(handle) -> tuple[list[Sweep], list[np.ndarray]]:
    """Sweeps and their pixel masks (True = use) from an open experiment.nxs."""
    group = handle["entry/experiment"]
    sweeps, masks = [], []
    for name in sorted(group, key=lambda n: int(n.split("_")[-1])):
        g = group[name]
        sweeps.append(sweep_from_dict(json.loads(g.attrs["model_json"])))
        masks.append(g["detector/pixel_mask"][()] == 0)
    return sweeps, masks
