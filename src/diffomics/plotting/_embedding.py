"""Figure of a joint latent space: its first two principal components, coloured by label."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from diffomics.core._errors import ShapeError

__all__ = ["latent_scatter"]


def latent_scatter(
    latent: np.ndarray,
    labels=None,
    *,
    title: str | None = None,
    figsize=(4.5, 4.0),
    point_size=6.0,
    ax: Axes | None = None,
) -> Figure:
    """Scatter of the first two principal components of an embedding, one colour per label.

    Args:
      latent: `(n_cells, dim)` embedding (for example ``obsm["X_diffomics"]``).
      labels: `(n_cells,)` labels to colour by; None draws every cell in one colour.
      title: axes title.
      figsize: figure size, inches (when `ax` is None).
      point_size: marker area.
      ax: axes to draw into (for example a panel of the caller's figure); None makes a
        new figure.

    Returns:
      The matplotlib `Figure` that holds the axes.

    Examples:
      >>> rng = np.random.default_rng(0)
      >>> fig = latent_scatter(rng.normal(size=(30, 4)), ["a", "b", "c"] * 10)
      >>> len(fig.axes[0].collections)
      3
    """
    z = np.asarray(latent, dtype=np.float64)
    labels = np.zeros(len(z), dtype=int) if labels is None else np.asarray(labels)
    legend = len(np.unique(labels)) > 1
    if z.ndim != 2 or len(labels) != len(z):
        msg = "latent must be (n_cells, dim) with one label per cell; "
        msg += f"found {z.shape} and {labels.shape}."
        raise ShapeError(msg)
    centred = z - z.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    pcs = centred @ vt[:2].T if z.shape[1] >= 2 else np.c_[centred, np.zeros(len(z))]
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    for lab in np.unique(labels):
        sel = labels == lab
        ax.scatter(pcs[sel, 0], pcs[sel, 1], s=point_size, label=str(lab), alpha=0.8)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    if legend:
        ax.legend(fontsize=7, markerscale=2, frameon=False)
    if title:
        ax.set_title(title, fontsize=9)
    return fig
