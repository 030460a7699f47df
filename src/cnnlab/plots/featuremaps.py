"""Figures of feature maps: one row per layer, the input image first."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure


@dataclass
class Panel:
    image: np.ndarray  # H, W in [0, 1]
    title: str


def featuremap_rows(image: np.ndarray, rows: list[tuple[str, list[Panel]]], cmap: str = "viridis") -> Figure:
    """A grid: each row shows ``image`` (H, W, 3 in [0, 1]) and then that row's maps.

    ``rows`` is a list of (row label, panels). Each map is shown as given (already in [0, 1]).
    """
    ncols = 1 + max(len(panels) for _, panels in rows)
    fig = Figure(figsize=(2.1 * ncols, 2.35 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False)
    for r, (label, panels) in enumerate(rows):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"input\n({label})", fontsize=8)
        for c in range(1, ncols):
            ax = axes[r, c]
            if c - 1 < len(panels):
                p = panels[c - 1]
                ax.imshow(p.image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
                ax.set_title(p.title, fontsize=7)
            ax.axis("off")
        axes[r, 0].axis("off")
    return fig
