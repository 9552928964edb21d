"""Synthetic rotation datasets with known truth, for the demo, the tests and the benchmarks.

The physics here is written independently of the reduction code (it uses SciPy's rotations,
its own pixel geometry in the XDS convention, its own correction factors and xraydb for
attenuation) so that the reduction can be tested against it.

Model of the expected counts of pixel p in frame z (0-based)::

    E[c] = t_z · scale · b(z) · Ω_p · P_p · E_p · A_p · [ I_D(h) + I_iso(|s|) + I_B(h) ]

* ``I_D``  diffuse: an anisotropic Gaussian envelope exp(−hᵀGh) (G symmetrised over the
  Laue group) times a constant plus "halos" around each allowed reflection whose weights
  vary randomly (symmetrically) from reflection to reflection — structure finer than the
  Bragg lattice.
* ``I_iso`` isotropic: a solvent ring at 1/3.2 Å⁻¹ plus a Compton-like rise with |s|.
* ``I_B``  Bragg peaks of allowed reflections only (gemmi reflection conditions), Gaussian
  in reciprocal space (σ in Å⁻¹), integrated over the frame's rotation by sub-sampling.
* b(z) beam decay; Poisson noise; Pilatus gaps (−1), a few dead (−2) and hot pixels,
  and zingers (single-frame spikes).

Files written (by :mod:`gpudiffuse.simulate_files`): ``frames/frame_NNNNN.cbf`` with a Pilatus
mini-header or an Eiger master + data files, ``XDS.INP``, ``GXPARM.XDS``, ``experiments.expt``
(DIALS); here ``truth.h5`` (parameters, b(z), Bragg pixel counts and the voxel-averaged truth of
every voxel the pixels visit).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field, replace

import gemmi
import h5py
import numpy as np
from scipy.spatial.transform import Rotation

from .grid import pack_voxels, unpack_voxels
from .simulate_absolute import AbsoluteUnits
from .simulate_files import eiger_writer, frame_name, write_cbf, write_dials, write_xds
from .simulate_tables import simulate_observation_table
from .simulate_truth import compare_with_truth, format_accuracy, voxel_truth

__all__ = ["SimulationParameters", "PRESETS", "SimulatedModel", "simulate_dataset", "load_model", "voxel_truth",
           "compare_with_truth", "format_accuracy", "simulate_observation_table"]

logger = logging.getLogger(__name__)

PILATUS_MODULE = (487, 195)
PILATUS_GAP = (7, 17)


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that defines a simulated dataset. Lengths in mm and Å, angles in degrees."""

    modules: tuple[int, int] = (1, 3)          # Pilatus modules along fast, slow (1×3 = 300K)
    pixel_size: float = 0.172
    distance: float = 120.0
    wavelength: float = 1.0
    beam_offset_px: tuple[float, float] = (12.3, -20.7)   # beam centre relative to the image centre
    detector_tilt_deg: tuple[float, float] = (0.6, -0.4)  # small rotations of the detector about x, y
    beam_tilt: tuple[float, float] = (0.0012, -0.0008)
    cell: tuple[float, float, float, float, float, float] = (40.0, 48.0, 56.0, 90.0, 90.0, 90.0)
    space_group: str = "I 2 2 2"
    orientation_seed: int = 11
    n_frames: int = 60
    phi0: float = 10.0
    dphi: float = 0.5
    exposure: float = 0.2
    sub_samples: int = 5                       # rotation sub-samples per frame for Bragg peaks
    thickness: float = 0.45
    scale: float = 8.0e8                       # photons per unit intensity per s per sr
    decay: float = 0.12                        # b(z) = 1 − decay·z/(n−1)
    diffuse_level: float = 1.0
    halo_level: float = 0.6
    halo_width: float = 0.010                  # Å⁻¹ (Gaussian σ of the halo around each reflection)
    b_factor: float = 12.0                     # Å², Bragg fall-off exp(−B|s|²/4)
    diffuse_b_factor: float = 5.0              # Å², mean diffuse envelope exp(−B|s|²/4), made anisotropic
    solvent_level: float = 1.2
    compton_level: float = 0.8
    bragg_level: float = 400.0
    bragg_width: float = 0.0008                # Å⁻¹ (Gaussian σ of a Bragg peak)
    n_hot: int = 3
    n_dead: int = 20
    zinger_rate: float = 2e-6                  # per pixel per frame
    overload: int = 1048500
    seed: int = 1
    n_sweeps: int = 1                          # sweeps, each starting sweep_phi_offset further
    sweep_phi_offset: float = 90.0
    sweep_brightness: tuple[float, ...] = (1.0, 1.25, 0.9, 1.1)
    absorption: float = 0.0                    # amplitude of the smooth surface a(ix, iy, z)
    module_spread: float = 0.0                 # spread of the per-module factors d
    offset_level: float = 0.0                  # additive offset c(|s|, z) (intensity units)
    anisotropy: tuple[float, float, float] = (2.5, 0.4, 1.0)  # of the diffuse envelope (1, 1, 1: isotropic)
    # absolute units (simulate_absolute): atoms per unit cell, e.g. "C1950 N540 O600 S16 H3100", plus
    # bulk water filling solvent_fraction of the cell; intensities are then e.u. per unit cell and
    # scale is photons per e.u. per s per sr. Empty: arbitrary units.
    composition: str = ""
    solvent_fraction: float = 0.5
    hole_radius: float = 0.45                  # Å⁻¹, where the F(000) deficit of the sum rule lies

    @property
    def image_size(self) -> tuple[int, int]:
        return tuple(m * s + (m - 1) * g for m, s, g in zip(self.modules, PILATUS_MODULE, PILATUS_GAP))


PRESETS = {
    "tiny": SimulationParameters(modules=(1, 1), n_frames=12, distance=80.0),
    "small": SimulationParameters(),
    "scaling": SimulationParameters(n_sweeps=2, n_frames=40, exposure=0.4, decay=0.15, absorption=0.06,
                                    module_spread=0.04, offset_level=0.15),
    # Pilatus 1M (2×5 modules, 981×1043 px), 120 frames of 0.5°, P2₁2₁2₁, 1.7 Å at the corner
    "1m": SimulationParameters(modules=(2, 5), n_frames=120, distance=180.0, space_group="P 21 21 21",
                               sub_samples=3),
    "p6m": SimulationParameters(modules=(5, 12), n_frames=50, distance=250.0, dphi=0.1, sub_samples=2,
                                cell=(60.0, 70.0, 80.0, 90.0, 90.0, 90.0)),
    # absolute units (e.u. per cell, k = 1/scale = 1.25e-4), 1.4 Å at the corner, an isotropic envelope so that
    # a partly observed shell still averages to the shell's mean, 60° so that enough reflections are
    # recorded for their shell sums (with 12°, the Bragg part to 0.45 Å⁻¹ came out 5 % low by
    # chance); no decay, so b = 1 exactly
    "absolute": SimulationParameters(modules=(1, 1), n_frames=60, dphi=1.0, sub_samples=6, distance=55.0,
                                     decay=0.0, scale=8000.0, bragg_width=0.0015, anisotropy=(1.0, 1.0, 1.0),
                                     composition="C1950 N540 O600 S16 H3100"),
}


@dataclass
class SimulatedModel:
    """Derived, deterministic quantities of a simulation (lab frame of XDS: beam along +z)."""

    params: SimulationParameters
    beam: np.ndarray = field(init=False)
    axis: np.ndarray = field(init=False)
    detector_axes: np.ndarray = field(init=False)  # rows: X, Y, normal
    orgx: float = field(init=False)
    orgy: float = field(init=False)
    real_axes: np.ndarray = field(init=False)      # rows a, b, c (Å) at φ = 0
    A: np.ndarray = field(init=False)
    ops: list = field(init=False)
    envelope: np.ndarray = field(init=False)       # G, exp(−hᵀ G h)
    table_origin: np.ndarray = field(init=False)
    halo_weight: np.ndarray = field(init=False)
    bragg_weight: np.ndarray = field(init=False)
    absolute: object = field(init=False)           # simulate_absolute.AbsoluteUnits, or None

    def __post_init__(self):
        p = self.params
        self.beam = np.array([p.beam_tilt[0], p.beam_tilt[1], 1.0])
        self.beam /= np.linalg.norm(self.beam)
        self.axis = np.array([1.0, 0.0, 0.0])
        tilt = Rotation.from_euler("xy", p.detector_tilt_deg, degrees=True).as_matrix()
        self.detector_axes = (tilt @ np.eye(3)).T
        nx, ny = p.image_size
        self.orgx = (nx + 1) / 2 + p.beam_offset_px[0]
        self.orgy = (ny + 1) / 2 + p.beam_offset_px[1]
        cell = gemmi.UnitCell(*p.cell)
        orth = np.array(cell.orth.mat.tolist())           # columns: a, b, c (Å)
        u = Rotation.random(random_state=p.orientation_seed).as_matrix()
        self.real_axes = (u @ orth).T
        self.A = np.linalg.inv(self.real_axes)
        sg = gemmi.SpaceGroup(p.space_group)
        rots = {tuple(np.array(op.rot).ravel() // gemmi.Op.DEN) for op in sg.operations()}
        self.ops = [np.array(r).reshape(3, 3) for r in sorted(rots)]
        self.ops += [-r for r in self.ops]
        # reciprocal metric and a symmetrised anisotropic envelope
        gstar = self.A.T @ self.A
        aniso = gstar * (p.diffuse_b_factor / 4) @ np.diag(p.anisotropy)
        self.envelope = sum(r @ aniso @ r.T for r in self.ops) / len(self.ops)
        # symmetric pseudo-random weights per integer reflection, allowed ones only
        dmin = self._dmin()
        hmax = np.ceil(np.linalg.norm(self.real_axes, axis=1) / dmin).astype(int) + 2
        grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij"), -1).reshape(-1, 3)
        self.table_origin = -hmax
        rng_key = np.uint64(p.seed * 7919 + 17)
        mean_hash = sum(_hash_unit(grid @ r.T, rng_key) for r in self.ops) / len(self.ops)
        allowed = ~sg.operations().systematic_absences(grid.astype(np.int32))
        shape = tuple(2 * hmax + 1)
        self.halo_weight = (np.where(allowed, 0.3 + 1.4 * mean_hash, 0.0)).reshape(shape)
        # Wilson-like exponential amplitudes from the same symmetric uniform numbers
        wilson = -np.log(np.clip(1 - mean_hash, 1e-6, 1))
        self.bragg_weight = (np.where(allowed, wilson, 0.0)).reshape(shape)
        self.absolute = AbsoluteUnits(self, 1 / dmin) if p.composition else None

    def _dmin(self) -> float:
        r = self.pixel_positions()[[0, 0, -1, -1], [0, -1, 0, -1]]
        s = r / np.linalg.norm(r, axis=-1, keepdims=True) / self.params.wavelength - self.beam / self.params.wavelength
        return 1 / np.linalg.norm(s, axis=-1).max()

    def pixel_positions(self) -> np.ndarray:
        """(ny, nx, 3) mm; XDS convention: pixel with 0-based index i is at X = i + 1."""
        p = self.params
        nx, ny = p.image_size
        ex, ey, en = self.detector_axes
        x = (np.arange(nx) + 1 - self.orgx) * p.pixel_size
        y = (np.arange(ny) + 1 - self.orgy) * p.pixel_size
        return p.distance * en + x[None, :, None] * ex + y[:, None, None] * ey

    def gaps(self) -> np.ndarray:
        """True on module-gap pixels."""
        nx, ny = self.params.image_size
        fx = (np.arange(nx) % (PILATUS_MODULE[0] + PILATUS_GAP[0])) >= PILATUS_MODULE[0]
        fy = (np.arange(ny) % (PILATUS_MODULE[1] + PILATUS_GAP[1])) >= PILATUS_MODULE[1]
        return fx[None, :] | fy[:, None]

    def corrections(self, positions) -> np.ndarray:
        """Ω·P·E·A per pixel, written out from first principles."""
        import xraydb  # noqa: PLC0415

        p = self.params
        d = np.linalg.norm(positions, axis=-1)
        unit = positions / d[..., None]
        cos_w = unit @ self.detector_axes[2]
        omega = p.pixel_size**2 * cos_w / d**2
        pol_normal = np.array([0.0, 1.0, 0.0])
        e_strong = np.cross(pol_normal, self.beam)
        e_strong /= np.linalg.norm(e_strong)
        e_weak = np.cross(self.beam, e_strong)
        frac = 0.99
        polar = frac * (1 - (unit @ e_strong) ** 2) + (1 - frac) * (1 - (unit @ e_weak) ** 2)
        energy = 12398.419843320026 / p.wavelength
        mu_si = xraydb.material_mu("Si", energy, density=2.329) / 10.0    # 1/mm
        mu_air = xraydb.material_mu("air", energy, density=0.001205) / 10.0
        efficiency = 1 - np.exp(-mu_si * p.thickness / cos_w)
        air = np.exp(-mu_air * d)
        return omega * polar * efficiency * air

    def _lookup(self, table, g):
        """table at integer hkl g (..., 3); 0 outside it."""
        idx = [g[..., i] - self.table_origin[i] for i in range(3)]
        inside = (idx[0] >= 0) & (idx[0] < table.shape[0]) & (idx[1] >= 0) & (idx[1] < table.shape[1]) \
            & (idx[2] >= 0) & (idx[2] < table.shape[2])
        flat = (idx[0] * table.shape[1] + idx[1]) * table.shape[2] + idx[2]
        return np.where(inside, table.ravel()[np.where(inside, flat, 0)], 0.0)

    def diffuse(self, hkl) -> np.ndarray:
        """Diffuse intensity I_D at fractional hkl (..., 3)."""
        p = self.params
        g = np.rint(hkl).astype(np.int64)
        delta_s = (hkl - g) @ self.A.T
        halo = self._lookup(self.halo_weight, g) * np.exp(-_squared_norm(delta_s) / (2 * p.halo_width**2))
        env = np.exp(-np.einsum("...i,ij,...j->...", hkl, self.envelope, hkl))
        if self.absolute is not None:
            return self.absolute.diffuse_factor(np.linalg.norm(hkl @ self.A.T, axis=-1)) * env * (1.0 + p.halo_level * halo)
        return p.diffuse_level * env * (1.0 + p.halo_level * halo)

    def isotropic(self, s_norm) -> np.ndarray:
        p = self.params
        if self.absolute is not None:
            return self.absolute.isotropic(s_norm)
        ring = p.solvent_level * np.exp(-((s_norm - 1 / 3.2) ** 2) / (2 * 0.045**2))
        return ring + p.compton_level * (1 - np.exp(-3.0 * s_norm**2))

    def bragg(self, hkl) -> np.ndarray:
        p = self.params
        g = np.rint(hkl).astype(np.int64)
        delta_s = (hkl - g) @ self.A.T
        s2 = _squared_norm(g @ self.A.T)
        if self.absolute is not None:
            amp = self.absolute.bragg_amplitude(self._lookup(self.bragg_weight, g), np.sqrt(s2), p.bragg_width)
        else:
            amp = p.bragg_level * self._lookup(self.bragg_weight, g) * np.exp(-p.b_factor * s2 / 4)
        return amp * np.exp(-_squared_norm(delta_s) / (2 * p.bragg_width**2))

    def decay(self, z, sweep: int = 0) -> np.ndarray:
        """b(z) of a sweep: brightness × (1 − decay·z/(n−1))."""
        n = self.params.n_frames
        brightness = self.params.sweep_brightness[sweep] if self.params.n_sweeps > 1 else 1.0
        return brightness * (1.0 - self.params.decay * np.asarray(z, float) / max(n - 1, 1))

    def absorption_surface(self, ix, iy, z, sweep: int = 0) -> np.ndarray:
        """a(ix, iy, z): a smooth, absorption-like surface over the detector, slowly changing with z."""
        nx, ny = self.params.image_size
        u, v, w = np.asarray(ix) / nx, np.asarray(iy) / ny, np.asarray(z, float) / self.params.n_frames
        shape = 0.6 * np.cos(2 * np.pi * u + 0.9 * sweep + 1.2 * w) * (v - 0.5) + 0.4 * np.sin(np.pi * v + 1.5 * w)
        return 1.0 + self.params.absorption * shape

    def module_factors(self) -> np.ndarray:
        """d per Pilatus module (row-major over modules), geometric mean 1."""
        n = self.params.modules[0] * self.params.modules[1]
        u = np.random.default_rng(self.params.seed + 101).uniform(-1, 1, n)
        d = 1.0 + self.params.module_spread * u
        return d / np.exp(np.mean(np.log(d)))

    def module_ids(self) -> np.ndarray:
        nx, ny = self.params.image_size
        mx = np.arange(nx) // (PILATUS_MODULE[0] + PILATUS_GAP[0])
        my = np.arange(ny) // (PILATUS_MODULE[1] + PILATUS_GAP[1])
        return my[:, None] * self.params.modules[0] + mx[None, :]

    def offset(self, s_norm, z, sweep: int = 0) -> np.ndarray:
        """c(|s|, z): additive residual background (intensity units)."""
        w = np.asarray(z, float) / self.params.n_frames
        return self.params.offset_level * (0.5 + 2.0 * np.asarray(s_norm)) * (1.0 + 0.3 * w + 0.1 * sweep)

    def rotation(self, phi_deg) -> np.ndarray:
        return Rotation.from_rotvec(np.deg2rad(phi_deg) * self.axis).as_matrix()


def _squared_norm(v: np.ndarray) -> np.ndarray:
    """Σ v_i² over the last axis (length 3), added in numpy's order, without a reduction over a
    short axis (slow on the (ny, nx, 3) arrays of a frame)."""
    return v[..., 0] * v[..., 0] + v[..., 1] * v[..., 1] + v[..., 2] * v[..., 2]


def _hash_unit(integers, key) -> np.ndarray:
    """Deterministic uniform numbers in [0, 1) from integer 3-vectors (splitmix64)."""
    v = integers.astype(np.int64).view(np.uint64)
    with np.errstate(over="ignore"):
        x = v[..., 0] * np.uint64(0x9E3779B97F4A7C15) ^ v[..., 1] * np.uint64(0xC2B2AE3D27D4EB4F)
        x = x ^ v[..., 2] * np.uint64(0x165667B19E3779F9) ^ key
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) / float(2**53)


def simulate_dataset(outdir: str, params: SimulationParameters | str = "small", ndiv=(3, 3, 3),
                     progress: bool = True, image_format: str = "cbf", **overrides) -> str:
    """Write a simulated dataset to ``outdir`` (which must not already hold one). Returns outdir.

    image_format : "cbf" (Pilatus CBF per frame; gaps −1, dead pixels −2) or "eiger" (an NXmx
    master and bitshuffle-LZ4 data files of the same counts: masked pixels flagged 2³²−1 and
    set in ``pixel_mask``, bit 0 gaps, bit 1 dead pixels)."""
    from .progress import progress_bar  # noqa: PLC0415

    if isinstance(params, str):
        params = PRESETS[params]
    params = replace(params, **overrides)
    if os.path.exists(os.path.join(outdir, "XDS.INP")):
        raise FileExistsError(f"{outdir} already holds a dataset (XDS.INP); choose an empty folder")
    if image_format not in ("cbf", "eiger"):
        raise ValueError(f"unknown image format {image_format!r} (cbf or eiger)")
    os.makedirs(os.path.join(outdir, "frames"), exist_ok=True)
    model = SimulatedModel(params)
    rng = np.random.default_rng(params.seed)
    positions = model.pixel_positions()
    ny, nx = positions.shape[:2]
    s_vectors = (positions / np.linalg.norm(positions, axis=-1, keepdims=True) - model.beam) / params.wavelength
    s_norm = np.linalg.norm(s_vectors, axis=-1)
    factor = model.corrections(positions)
    isotropic = model.isotropic(s_norm)
    gaps = model.gaps()
    flat = rng.choice(np.flatnonzero(~gaps.ravel()), params.n_dead + params.n_hot, replace=False)
    dead, hot = flat[: params.n_dead], flat[params.n_dead:]
    visited = []  # packed voxel keys seen, per frame
    n = np.asarray(ndiv)
    bragg_pixels = np.zeros((params.n_sweeps, params.n_frames), dtype=np.int64)
    inv_a = np.linalg.inv(model.A)
    iy, ix = np.mgrid[0:ny, 0:nx]
    detector_factor = model.module_factors()[model.module_ids()] if params.module_spread else 1.0
    bar = progress_bar(progress, total=params.n_sweeps * params.n_frames, desc="simulate", unit="frame")
    for sweep in range(params.n_sweeps):
        writer = eiger_writer(outdir, params, sweep, gaps, dead) if image_format == "eiger" else None
        phi_start = params.phi0 + sweep * params.sweep_phi_offset
        for z in range(params.n_frames):
            phi_mid = phi_start + (z + 0.5) * params.dphi
            hkl_mid = s_vectors @ (inv_a @ model.rotation(phi_mid).T).T
            intensity = model.diffuse(hkl_mid) + isotropic
            bragg = np.zeros_like(intensity)
            for k in range(params.sub_samples):
                phi = phi_start + (z + (k + 0.5) / params.sub_samples) * params.dphi
                hkl = s_vectors @ (inv_a @ model.rotation(phi).T).T
                bragg += model.bragg(hkl)
            bragg /= params.sub_samples
            expected = params.exposure * params.scale * factor
            if params.absorption:
                expected = expected * model.absorption_surface(ix, iy, z, sweep)
            expected = expected * detector_factor
            scaled = model.decay(z, sweep) * (intensity + bragg)
            if params.offset_level:
                scaled = scaled + model.offset(s_norm, z, sweep)
            counts = rng.poisson(expected * scaled).astype(np.int64)
            bragg_pixels[sweep, z] = np.count_nonzero(expected * model.decay(z, sweep) * bragg > 1.0)
            zingers = rng.random(counts.shape) < params.zinger_rate
            counts[zingers] += rng.integers(500, 5000, np.count_nonzero(zingers))
            counts.ravel()[hot] = 60000
            counts = np.minimum(counts, params.overload)
            counts[gaps] = -1
            counts.ravel()[dead] = -2
            if writer is not None:
                writer.add(counts)
            else:
                write_cbf(os.path.join(outdir, "frames", frame_name(params, sweep, z)), counts.astype(np.int32),
                           params, model, z, phi_start)
            visited.append(np.unique(pack_voxels(np.rint(hkl_mid[~gaps] * n).astype(np.int64))))
            bar.update(1)
        if writer is not None:
            writer.close()
    bar.close()
    if params.n_sweeps == 1:
        write_xds(outdir, params, model, image_format)
    write_dials(outdir, params, model, image_format)
    keys = unpack_voxels(np.unique(np.concatenate(visited)))  # sorted by (h, k, l)
    truth = voxel_truth(model, keys / n, ndiv)
    with h5py.File(os.path.join(outdir, "truth.h5"), "w") as f:
        f.attrs["parameters"] = json.dumps(asdict(params))
        f.attrs["ndiv"] = n
        f["decay"] = np.array([model.decay(np.arange(params.n_frames), j) for j in range(params.n_sweeps)])
        f["module_factors"] = model.module_factors()
        f["bragg_pixels_per_frame"] = bragg_pixels
        f["voxel/H"], f["voxel/K"], f["voxel/L"] = keys[:, 0], keys[:, 1], keys[:, 2]
        f["voxel/intensity"] = truth
        f["hot_pixels"] = hot
        f["dead_pixels"] = dead
    return outdir


def load_model(outdir: str) -> SimulatedModel:
    """The model of a dataset written by :func:`simulate_dataset`."""
    with h5py.File(os.path.join(outdir, "truth.h5"), "r") as f:
        raw = json.loads(f.attrs["parameters"])
    raw = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return SimulatedModel(SimulationParameters(**raw))
