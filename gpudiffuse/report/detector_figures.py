"""The report's figures of the scaling model and of the masks on one frame."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from .figures import SEQUENTIAL

__all__ = ["scale_figure", "mask_figure"]


def _frames(n_nodes: int, n_frames: int) -> np.ndarray:
    """Frame numbers (0-based) of ``n_nodes`` control points spread uniformly over a sweep."""
    return np.linspace(0, max(n_frames - 1, 1), n_nodes)


def scale_figure(data) -> Figure:
    """b(frame) ± σ per sweep, d per detector module, a(ix, iy) at the first, middle and last
    frame node, c(|s|, frame), and χ² per fit round; for ``isotropic`` only the per-frame b."""
    scale = data.scale
    n_frames = {s.batch: s.scan.num_frames for s in data.experiment.sweeps}
    longest = max(n_frames.values())
    figure = Figure(figsize=(13, 8.5), layout="constrained")
    if scale["mode"] != "model":
        ax = figure.subplots()
        for batch, factors in sorted(scale["frame_scale"].items()):
            ax.plot(np.arange(len(factors)), factors, label=f"sweep {batch}")
        ax.set_xlabel("frame (0-based)")
        ax.set_ylabel("b (dimensionless)")
        ax.set_title("per-frame scale from the isotropic scattering" if scale["frame_scale"] else
                     "no scaling applied (--scale none)")
        if scale["frame_scale"]:
            ax.legend(fontsize=8)
        return figure
    a = scale["a"].reshape(scale["shape_a"])[0]  # (nx, ny, nz) of the first sweep
    nodes = sorted({0, a.shape[2] // 2, a.shape[2] - 1})
    axes = figure.subplot_mosaic([["b", "b", "d"], [f"a{i}" for i in range(len(nodes))] + ["."] * (3 - len(nodes)),
                                  ["c", "c", "chi2"]])
    b = scale["b"].reshape(scale["shape_b"])
    b_sigma = scale.get("b_sigma", np.zeros(b.size)).reshape(scale["shape_b"])
    for i, batch in enumerate(sorted(n_frames)):
        z = _frames(b.shape[1], longest if len(n_frames) == 1 else n_frames[batch])
        axes["b"].errorbar(z, b[i], yerr=b_sigma[i], capsize=2, marker="o", ms=3, label=f"sweep {batch}")
    axes["b"].set(xlabel="frame (0-based)", ylabel="b (dimensionless)", title="b(frame): overall scale, ±1σ")
    if len(n_frames) <= 8:
        axes["b"].legend(fontsize=7)
    _module_factors(axes["d"], data, scale["d"], figure)
    low, high = np.percentile(a, [1, 99]) if a.size else (0, 1)
    fast, slow = data.experiment.sweeps[0].panel.image_size
    frames = _frames(a.shape[2], n_frames[min(n_frames)])
    for i, node in enumerate(nodes):  # the control points, interpolated as the model is
        name = f"a{i}"
        image = axes[name].imshow(a[:, :, node].T, origin="lower", extent=[0, fast, 0, slow], cmap=SEQUENTIAL,
                                  vmin=low, vmax=high if high > low else low + 1e-6, aspect="equal",
                                  interpolation="bilinear")
        axes[name].set(xlabel="fast pixel", ylabel="slow pixel", title=f"a(x, y) at frame {frames[node]:.0f}")
        _colorbar(figure, image, axes[name], "a (dimensionless)")
    c = scale["c"].reshape(scale["shape_c"])[0]  # (n_s, n_z) of the first sweep
    s_nodes = np.linspace(*scale["s_range"], c.shape[0])
    z_nodes = _frames(c.shape[1], n_frames[min(n_frames)])
    image = axes["c"].imshow(c, origin="lower", aspect="auto", cmap=SEQUENTIAL, interpolation="bilinear",
                             extent=[z_nodes[0], z_nodes[-1], s_nodes[0], s_nodes[-1]])
    axes["c"].set(xlabel="frame (0-based)", ylabel="|s| (Å⁻¹)", title="c(|s|, frame): additive offset, sweep 0")
    _colorbar(figure, image, axes["c"], "c (counts / (s sr), relative scale)")
    rounds = scale.get("rounds", {})
    if rounds:
        labels = ["start" if np.isnan(k) else f"k={k:g}" for k in rounds["k"]]
        bars = axes["chi2"].bar(range(len(labels)), rounds["chi2"], color="grey", edgecolor="black")
        axes["chi2"].bar_label(bars, labels=[f"{c:.4g}" for c in rounds["chi2"]], fontsize=7)
        axes["chi2"].set_xticks(range(len(labels)), labels, fontsize=8)
    axes["chi2"].set(ylabel="χ²", title=f"χ² per round ({scale['method']}; before: {scale['chi2'][0]:.4g})")
    figure.suptitle("Scaling model a(x, y, frame) · d(module) · [b(frame) · I + c(|s|, frame)]", fontsize=11)
    return figure


def _colorbar(figure, image, ax, label):
    bar = figure.colorbar(image, ax=ax, shrink=0.8)
    bar.formatter.set_useOffset(False)  # factors near 1 as 0.9995 … 1.0005, not "+1" and offsets
    bar.update_ticks()
    bar.set_label(label, fontsize=7)
    bar.ax.tick_params(labelsize=7)


def _module_factors(ax, data, d, figure):
    from ..masking.layout import layout_for_size  # noqa: PLC0415

    panel = data.experiment.sweeps[0].panel
    layout = layout_for_size(panel.image_size)
    ids = layout.module_ids() if layout is not None else np.zeros(panel.image_size[::-1], np.int32)
    image = np.where(ids >= 0, d[np.clip(ids, 0, len(d) - 1)], np.nan)
    shown = ax.imshow(image, origin="upper", cmap=SEQUENTIAL, aspect="equal", interpolation="nearest")
    ax.set(xlabel="fast pixel", ylabel="slow pixel", title=f"d per detector module ({len(d)})")
    _colorbar(figure, shown, ax, "d (dimensionless)")


def _filter_panel(ax, record: dict) -> None:
    """The statistical filter works on voxels, not pixels: the share of voxel-wedge rows it moved
    to the excluded table, per resolution shell."""
    shells = record["shells"]
    d_min, fraction = shells["d_min"], 100 * np.nan_to_num(shells["fraction_moved"])
    ax.bar(np.arange(len(d_min)), fraction, color="0.3")
    ax.set_xticks(np.arange(len(d_min)), [f"{d:.2f}" for d in d_min], rotation=60, fontsize=7)
    ax.set(xlabel="shell (d_min, Å)", ylabel="voxel-wedge rows excluded (%)")
    grid = " ".join(map(str, record["filter_ndiv"]))
    per_wedge = record["per_wedge"]
    ax.set_title(f"statistical filter on ndiv {grid}: {int(per_wedge['removed'].sum())} voxel-wedges\n"
                 f"removed by the walk, {int(per_wedge['overflow'].sum())} with counts above c_max", fontsize=10)


def mask_figure(data) -> Figure:
    """The middle frame of the first sweep: its counts, the static pixel mask (with hot pixels),
    and the pixels the Bragg model masks on that frame (or, for the statistical filter, which
    excludes voxels rather than pixels, the share of rows it excluded per shell)."""
    from ..geometry.vectors import sweep_fractional_hkl  # noqa: PLC0415
    from ..io.frames import FrameSource  # noqa: PLC0415
    from ..masking.peaks import absent_table, bragg_mask  # noqa: PLC0415

    sweep, mask = data.experiment.sweeps[0], data.experiment.masks[0]
    z = sweep.scan.num_frames // 2
    frame = next(iter(FrameSource(sweep, np.array([z]), chunk_size=1))).data[0].astype(np.float64)
    figure = Figure(figsize=(14, 4.8), layout="constrained")
    axes = figure.subplots(1, 3)
    shown = np.log10(np.clip(np.where(mask, frame, np.nan), 1, None))
    image = axes[0].imshow(shown, cmap="gray_r", interpolation="nearest")
    figure.colorbar(image, ax=axes[0], shrink=0.8).set_label("log₁₀ counts", fontsize=7)
    axes[0].set_title(f"{sweep.images[z].split('/')[-1]} (frame {z + 1})", fontsize=10)
    static = mask.copy()
    if data.peaks is not None:
        static &= ~data.peaks.hot_pixels[0]
    axes[1].imshow(static, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    axes[1].set_title(f"pixel mask: black = masked ({100 * (1 - static.mean()):.2f} %)", fontsize=10)
    if data.peaks is not None:
        crystal = sweep.crystal
        hmax = np.floor(np.linalg.norm(crystal.real_space_axes, axis=1) / data.dmin).astype(int) + 1
        hkl = sweep_fractional_hkl(sweep, z).reshape(-1, 3)
        bragg = bragg_mask(hkl, data.peaks.model, absent_table(crystal.space_group, hmax)).reshape(mask.shape)
        axes[2].imshow(~(bragg & static), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        axes[2].set_title(f"Bragg mask on this frame: black = masked ({100 * (bragg & static).mean():.2f} %)",
                          fontsize=10)
    elif data.bragg_filter is not None:
        _filter_panel(axes[2], data.bragg_filter)
    else:
        axes[2].text(0.5, 0.5, "no Bragg mask (--bragg-mask none)", ha="center", va="center")
        axes[2].set_axis_off()
    for ax in axes[:2]:
        ax.set(xlabel="fast pixel", ylabel="slow pixel")
    if data.peaks is not None:
        axes[2].set(xlabel="fast pixel", ylabel="slow pixel")
        if data.bragg_filter is not None:  # --bragg-mask both: the filter's share in the title
            moved = 100 * np.nanmean(data.bragg_filter["shells"]["fraction_moved"])
            axes[2].set_title(axes[2].get_title() + f"\n+ statistical filter: {moved:.2f} % of voxel-wedge rows",
                              fontsize=10)
    figure.suptitle("Masks on one frame", fontsize=11)
    return figure
