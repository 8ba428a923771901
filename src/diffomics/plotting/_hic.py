"""Figure of a Hi-C analysis, HiGlass-style: the map over stacked tracks.

The balanced map with compartment, insulation and boundary tracks and loop markers; it reads
a `HiCResult` and computes nothing.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from diffomics.core._errors import ConfigError

__all__ = ["hic_tracks"]


def hic_tracks(
    result,
    *,
    region: tuple[int, int] | None = None,
    window: int | None = None,
    max_bins: int = 1200,
    vmax_percentile: float = 99.0,
    figsize: tuple[float, float] = (7.0, 9.5),
) -> Figure:
    """Draw a region of a Hi-C map with its compartment, insulation and boundary tracks.

    Top: balanced contacts on a log colour scale, with the called loops circled (upper
    triangle) and the boundaries of `window` as ticks. Below, on the same genomic axis: the
    first eigenvector (A positive in red, B negative in blue, when phased), the log2
    insulation score of `window` with its boundaries marked by strength.

    Args:
      result: a `diffomics.hic.HiCResult` (from `diffomics.hic.analyze`).
      region: ``(start, end)`` in bp; default the first `max_bins` bins.
      window: insulation window (bp) to draw; default the middle one analysed.
      max_bins: largest number of bins drawn (the map is dense in the region).
      vmax_percentile: upper end of the colour scale, percentile of the non-zero pixels.
      figsize: figure size, inches.

    Returns:
      The matplotlib `Figure`.

    Raises:
      ConfigError: the region is empty, too large, or outside the map; or the result holds
        several chromosomes (draw one of ``result.regions``).
    """
    if result.regions:
        msg = (
            f"result holds {len(result.regions)} regions; draw one at a time: "
            f"hic_tracks(result.regions[{next(iter(result.regions))!r}])."
        )
        raise ConfigError(msg)
    cmap = result.map
    starts = cmap.bins["start"].to_numpy()
    res = cmap.resolution
    lo_bp, hi_bp = region if region is not None else (starts[0], starts[0] + max_bins * res)
    lo = int(np.searchsorted(starts, lo_bp, side="right") - 1)
    hi = int(np.searchsorted(starts, hi_bp, side="left"))
    lo, hi = max(lo, 0), min(hi, cmap.n_bins)
    if hi - lo < 3 or hi - lo > max_bins:
        msg = (
            f"region {region} covers {hi - lo} bins of the map (start {starts[0]}, "
            f"{cmap.n_bins} bins of {res} bp); draw between 3 and max_bins={max_bins} bins."
        )
        raise ConfigError(msg)
    keep = (cmap.bin1 >= lo) & (cmap.bin2 < hi)
    w = np.nan_to_num(result.weights, nan=0.0)
    b1, b2 = cmap.bin1[keep] - lo, cmap.bin2[keep] - lo
    values = cmap.count[keep] * w[cmap.bin1[keep]] * w[cmap.bin2[keep]]
    dense = np.zeros((hi - lo, hi - lo))
    dense[b1, b2] = values
    dense[b2, b1] = values
    positive = dense[dense > 0]
    extent = (starts[lo] / 1e6, (starts[hi - 1] + res) / 1e6)

    windows = sorted(int(c.rsplit("_", 1)[1]) for c in result.insulation.columns
                     if c.startswith("log2_insulation_score_"))  # fmt: skip
    window = window or (windows[len(windows) // 2] if windows else None)

    fig = plt.figure(figsize=figsize)
    grid = fig.add_gridspec(3, 1, height_ratios=[6, 1, 1.2], hspace=0.08)
    ax_map = fig.add_subplot(grid[0])
    if positive.size:
        norm = LogNorm(vmin=np.percentile(positive, 1), vmax=np.percentile(positive,
                                                                           vmax_percentile))
        image = ax_map.imshow(np.where(dense > 0, dense, np.nan), cmap="YlOrRd", norm=norm,
                              extent=(*extent, extent[1], extent[0]), interpolation="none")
        fig.colorbar(image, ax=ax_map, fraction=0.04, pad=0.02, label="balanced contacts")
    if result.loops is not None and len(result.loops):
        loops = result.loops
        inside = (loops["start1"] >= starts[lo]) & (loops["end2"] <= starts[hi - 1] + res)
        ax_map.scatter(loops.loc[inside, "start2"] / 1e6 + res / 2e6,
                       loops.loc[inside, "start1"] / 1e6 + res / 2e6, s=40,
                       facecolors="none", edgecolors="black", linewidths=0.8,
                       label=f"loops ({int(inside.sum())})")  # fmt: skip
        ax_map.legend(loc="lower left", fontsize=8)
    ax_map.set_ylabel(f"{cmap.bins['chrom'].iloc[0]} (Mb)")
    ax_map.tick_params(labelbottom=False)

    ax_e1 = fig.add_subplot(grid[1], sharex=ax_map)
    if result.compartments is not None:
        comp = result.compartments
        x = (comp["start"].to_numpy() + result.compartment_resolution / 2) / 1e6
        e1 = comp["E1"].to_numpy()
        sel = (x >= extent[0]) & (x <= extent[1])
        width = result.compartment_resolution / 1e6
        ax_e1.bar(x[sel], np.nan_to_num(e1[sel]), width=width,
                  color=np.where(e1[sel] > 0, "tab:red", "tab:blue"))  # fmt: skip
    ax_e1.axhline(0, color="grey", lw=0.5)
    ax_e1.set_ylabel("E1")
    ax_e1.tick_params(labelbottom=False)

    ax_ins = fig.add_subplot(grid[2], sharex=ax_map)
    if window is not None:
        table = result.insulation.iloc[lo:hi]
        x = (table["start"].to_numpy() + res / 2) / 1e6
        ax_ins.plot(x, table[f"log2_insulation_score_{window}"], color="black", lw=0.8)
        called = table[table[f"is_boundary_{window}"]]
        xb = (called["start"].to_numpy() + res / 2) / 1e6
        ax_ins.scatter(xb, called[f"log2_insulation_score_{window}"],
                       s=8 + 40 * called[f"boundary_strength_{window}"].clip(0, 1.5),
                       color="tab:green", zorder=3,
                       label=f"boundaries ({len(called)})")  # fmt: skip
        ax_map.plot(xb, xb, "|", color="tab:green", ms=8)
        ax_ins.legend(loc="lower left", fontsize=8)
        ax_ins.set_ylabel(f"log2 ins.\n{window // 1000} kb")
    ax_ins.set_xlabel("position (Mb)")
    ax_ins.set_xlim(*extent)
    return fig
