"""The report's figures (matplotlib, Agg). Each function takes ``ReportData`` and returns a
Figure with axes in stated units and colour bars. Maps use viridis/cividis, whose lightness rises
monotonically, so that they read the same printed in greyscale."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .data import radial_profile, voxel_s_grid

__all__ = ["map_sections", "half_integer_sections", "profile_figure", "statistics_figure", "completeness"]

SEQUENTIAL, SIGNED = "viridis", "cividis"
PLANES = (("hk0", 2), ("h0l", 1), ("0kl", 0))  # section name, fixed axis


def _section(grid, axis: int, value: float):
    """The 2-D section of ``grid["intensity"]`` at index value ``value`` (r.l.u.) of ``axis``:
    (array rows = first free axis, the free axes' numbers, the value actually on the grid)."""
    axes = grid["axes"]
    i = int(np.argmin(np.abs(axes[axis] - value)))
    section = np.take(grid["intensity"], i, axis=axis)
    free = [a for a in range(3) if a != axis]
    return section, free, float(axes[axis][i])


def _limits(values, signed=False):
    finite = values[np.isfinite(values)]
    if not finite.size:
        return (-1, 1) if signed else (0, 1)
    if signed:
        top = np.percentile(np.abs(finite), 99) or 1.0
        return -top, top
    low, high = np.percentile(finite, [1, 99])
    return low, high if high > low else low + 1


def _draw(ax, section, free, grid, limits, cmap, title, figure, label):
    axes, names = grid["axes"], "hkl"
    extent = [axes[free[0]][0], axes[free[0]][-1], axes[free[1]][0], axes[free[1]][-1]]
    reciprocal = _reciprocal_lengths(grid["unit_cell"])
    image = ax.imshow(section.T, origin="lower", extent=extent, cmap=cmap, vmin=limits[0], vmax=limits[1],
                      aspect=reciprocal[free[1]] / reciprocal[free[0]], interpolation="nearest")
    ax.set_xlabel(f"{names[free[0]]} (r.l.u.)")
    ax.set_ylabel(f"{names[free[1]]} (r.l.u.)")
    ax.set_title(title, fontsize=10)
    bar = figure.colorbar(image, ax=ax, shrink=0.8)
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _reciprocal_lengths(unit_cell):
    import gemmi  # noqa: PLC0415

    r = gemmi.UnitCell(*unit_cell).reciprocal()
    return r.a, r.b, r.c


def _anisotropic(section, free, fixed_axis, value, grid, profile):
    """The section minus the isotropic shell mean at each voxel's |s| (NaN stays NaN)."""
    s = voxel_s_grid(grid["axes"], grid["unit_cell"], {fixed_axis: value})
    finite = np.isfinite(profile["mean_I"])
    mean = np.interp(s, profile["s"][finite], profile["mean_I"][finite])
    return section - mean.reshape(section.shape)


def _section_figure(data, planes, title):
    grid, profile = data.map, radial_profile(data.merged.merged)
    figure = Figure(figsize=(13, 8.2), layout="constrained")
    axes = figure.subplots(2, 3)
    for column, (name, fixed, value) in enumerate(planes):
        section, free, actual = _section(grid, fixed, value)
        label = name if value == 0 else name.replace("½", f"{actual:.3g}")
        _draw(axes[0, column], section, free, grid, _limits(section), SEQUENTIAL, f"total, {label}", figure,
              f"I ({data.merged.units})")
        aniso = _anisotropic(section, free, fixed, actual, grid, profile)
        _draw(axes[1, column], aniso, free, grid, _limits(aniso, signed=True), SIGNED,
              f"anisotropic (total − shell mean), {label}", figure, "I − ⟨I⟩ of its |s| shell (same unit)")
    figure.suptitle(title + " (white: not measured; dark to light = low to high)", fontsize=11)
    return figure


def map_sections(data) -> Figure:
    """Sections through the origin, hk0, h0l, 0kl: the total map above, the anisotropic below."""
    return _section_figure(data, [(name, fixed, 0.0) for name, fixed in PLANES],
                           "Map sections through the origin")


def half_integer_sections(data) -> Figure:
    """Sections halfway between Bragg layers (the grid plane nearest ½ when ndiv is odd)."""
    return _section_figure(data, [("hk½", 2, 0.5), ("h½l", 1, 0.5), ("½kl", 0, 0.5)],
                           "Sections between Bragg layers")


def profile_figure(data) -> Figure:
    profile = radial_profile(data.merged.merged)
    figure = Figure(figsize=(8, 4.5), layout="constrained")
    ax = figure.subplots()
    ax.plot(profile["s"], profile["mean_I"], color="black", lw=1.5, label="⟨I⟩ of the merged voxels")
    ax.set_xlabel("|s| = 2 sin θ / λ (Å⁻¹)")
    ax.set_ylabel(f"⟨I⟩ ({data.merged.units})")
    ax.set_title("Isotropic (radial) profile of the merged diffuse map")
    ax.set_xlim(0, profile["s"][-1])
    _d_axis(ax, lambda d: 1 / d, profile["s"][-1])
    peak = int(np.nanargmax(profile["mean_I"]))
    ax.annotate(f"maximum at {1 / profile['s'][peak]:.2f} Å", (profile["s"][peak], profile["mean_I"][peak]),
                xytext=(10, -20), textcoords="offset points", fontsize=8)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure


def _d_axis(ax, position, x_max):
    """A top axis labelled in d (Å) at round values, ``position(d)`` the bottom axis' coordinate."""
    top = ax.twiny()
    top.set_xlim(ax.get_xlim())
    low, high = ax.get_xlim()
    ticks = []
    for d in (20, 10, 6, 5, 4, 3, 2.5, 2, 1.8, 1.6, 1.5, 1.4, 1.3, 1.2, 1.1, 1.0, 0.9, 0.8):
        # round values inside the axis, none closer than 6 % of its width to the one before
        inside = low <= position(d) <= min(x_max, high)
        if inside and (not ticks or position(d) - position(ticks[-1]) > 0.06 * (high - low)):
            ticks.append(d)
    top.set_xticks([position(d) for d in ticks], [f"{d:g}" for d in ticks], fontsize=8)
    top.set_xlabel("d (Å)", fontsize=8)


def completeness(data) -> np.ndarray:
    """Per statistics shell: measured map voxels (all symmetry mates) / voxels the shell's
    reciprocal volume holds (4π/3 (s₂³ − s₁³) / (V*/n₁n₂n₃))."""
    stats = data.merged.statistics
    s_low, s_high = 1 / stats["d_max"], 1 / stats["d_min"]
    grid = data.map
    ndiv = np.asarray(grid["ndiv"], dtype=np.float64)
    import gemmi  # noqa: PLC0415

    voxel_volume = gemmi.UnitCell(*grid["unit_cell"]).reciprocal().volume / np.prod(ndiv)
    measured = np.zeros(len(s_low))
    for fixed_index in range(len(grid["axes"][2])):  # plane by plane: no full |s| grid in memory
        section = grid["intensity"][:, :, fixed_index]
        s = voxel_s_grid(grid["axes"], grid["unit_cell"], {2: grid["axes"][2][fixed_index]}).reshape(section.shape)
        s = s[np.isfinite(section)]
        measured += np.histogram(s, bins=np.r_[s_low, s_high[-1]])[0]
    expected = 4 * np.pi / 3 * (s_high**3 - s_low**3) / voxel_volume
    return measured / expected


def statistics_figure(data) -> Figure:
    stats = data.merged.statistics
    d_mid = 2 / (1 / stats["d_max"] + 1 / stats["d_min"])
    x = 1 / d_mid**2
    figure = Figure(figsize=(11, 6.5), layout="constrained")
    axes = figure.subplots(2, 2)
    panels = [("CC½", [("cc_half", "scaled", "-o")] + ([("cc_half_unscaled", "unscaled", "--s")]
                                                      if "cc_half_unscaled" in stats else [])),
              ("CC*", [("cc_star", "scaled", "-o")]), ("⟨I/σ⟩", [("mean_I_over_sigma", "", "-o")])]
    for ax, (label, series) in zip(axes.ravel(), panels):
        for key, name, style in series:
            ax.plot(x, stats[key], style, color="black" if name != "unscaled" else "grey", label=name or None)
        ax.set_ylabel(label)
        if any(name for _, name, _ in series):
            ax.legend(fontsize=8)
    axes[1, 1].plot(x, 100 * completeness(data), "-o", color="black")
    axes[1, 1].set_ylabel("completeness (%)")
    for ax in axes.ravel():
        ax.set_xlabel("1/d² (Å⁻²)")
        _d_axis(ax, lambda d: 1 / d**2, x.max())
        ax.grid(alpha=0.3)
    figure.suptitle("Merging statistics per resolution shell (random half-sets; completeness of the expanded map)",
                    fontsize=11)
    return figure


def absolute_figure(data) -> Figure | None:
    """k against the cutoff S, and the observed shell means on the absolute scale against the
    theory of the cell's contents (None when the folder has no absolute.nxs)."""
    if data.absolute is None:
        return None
    a = data.absolute.scale
    centres = 0.5 * (a.edges[1:] + a.edges[:-1])
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    left, right = figure.subplots(1, 2)
    usable = a.edges >= 0.25
    left.plot(a.edges[usable], a.k_curve[usable], color="black", lw=1.5)
    left.axvline(a.s_cutoff, color="tab:red", lw=1, ls="--", label=f"S_c = {a.s_cutoff:.3f} Å⁻¹, k = {a.k:.4g}")
    left.set_xlabel("cutoff S (Å⁻¹)")
    left.set_ylabel("k = I_theo(S) / I_obs(S)  (e.u. per cell per counts/(s sr))")
    left.set_title("Absolute scale against the cutoff: look for a plateau")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    right.plot(centres, a.k * a.observed, color="black", lw=1.2, label="k·⟨I_D + I_B⟩ observed (shell means)")
    right.plot(centres, a.coherent + a.incoherent, color="tab:blue", lw=1.2, label="I_coh + I_inc (independent atoms)")
    right.plot(centres, a.incoherent, color="tab:orange", lw=1.2, label="I_inc (subtracted from the map)")
    right.set_xlabel("|s| = 2 sin θ / λ (Å⁻¹)")
    right.set_ylabel("e.u. per unit cell")
    right.set_title(f"Shell means on the absolute scale (N_e = {a.electrons:.6g} per cell)")
    right.set_xlim(0, a.edges[-1])
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    return figure
