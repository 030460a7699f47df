"""Figures of feature maps: maps per layer with their overlays on the photo, each channel's
strongest responses over an image set, and the layers' class selectivity."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.figure import Figure

OVERLAY_ALPHA = 0.55  # map over the photo: enough to see both


@dataclass
class Panel:
    image: np.ndarray  # H, W in [0, 1] (a map) or H, W, 3 (a photo or patch)
    title: str
    overlay: np.ndarray | None = None  # the map upsampled to the photo's size, H', W' in [0, 1]


def _overlay(ax, photo: np.ndarray, heat: np.ndarray, cmap: str) -> None:
    ax.imshow(photo.mean(axis=2), cmap="gray", vmin=0.0, vmax=1.0)  # the photo in grey, so colour is the map
    ax.imshow(heat, cmap=cmap, vmin=0.0, vmax=1.0, alpha=OVERLAY_ALPHA)


def featuremap_rows(image: np.ndarray, rows: list[tuple[str, list[Panel]]], cmap: str = "viridis") -> Figure:
    """A grid: each row shows ``image`` (H, W, 3 in [0, 1]) and then that row's maps.

    ``rows`` is a list of (row label, panels). Each map is shown as given (already in [0, 1]);
    panels with an ``overlay`` get it drawn on the photo in the line below their map.
    """
    lines: list[tuple[str, list[Panel], bool]] = []
    for label, panels in rows:
        lines.append((label, panels, False))
        if any(p.overlay is not None for p in panels):
            lines.append((label, panels, True))
    ncols = 1 + max(len(panels) for _, panels in rows)
    fig = Figure(figsize=(2.1 * ncols, 2.35 * len(lines)), layout="constrained")
    axes = fig.subplots(len(lines), ncols, squeeze=False)
    for r, (label, panels, on_photo) in enumerate(lines):
        axes[r, 0].imshow(image)
        axes[r, 0].set_title(f"{'maps on the photo' if on_photo else 'input'}\n({label})", fontsize=8)
        for c in range(1, ncols):
            ax = axes[r, c]
            if c - 1 < len(panels):
                p = panels[c - 1]
                if on_photo and p.overlay is not None:
                    _overlay(ax, image, p.overlay, cmap)
                    ax.set_title(p.title.split("\n")[0] + "\non the photo", fontsize=7)
                elif not on_photo:
                    ax.imshow(p.image, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
                    ax.set_title(p.title, fontsize=7)
            ax.axis("off")
        axes[r, 0].axis("off")
    return fig


@dataclass
class TuningRow:
    """One channel: its map on the photo and the patches under its strongest responses over a set."""

    title: str
    map: np.ndarray  # H, W in [0, 1]
    overlay: np.ndarray  # the map upsampled to the photo, in [0, 1]
    patches: list[Panel] = field(default_factory=list)  # image: h, w, 3 in [0, 1]


def tuning_grid(photo: np.ndarray, rows: list[TuningRow], per_line: int = 4, cmap: str = "viridis",
                title: str = "") -> Figure:
    """Per channel a block of two lines: the map on the photo and the map itself on the left,
    then its top patches, ``per_line`` to a line (large enough to recognise what they show)."""
    n_lines = max(1, -(-max((len(r.patches) for r in rows), default=0) // per_line))
    ncols, nrows = 1 + per_line, max(2, n_lines) * len(rows)
    height = 1.95 * nrows + 0.4
    fig = Figure(figsize=(1.9 * ncols, height))  # a fixed grid: constrained layout of ~50 axes costs seconds
    axes = fig.subplots(nrows, ncols, squeeze=False, gridspec_kw={"wspace": 0.08, "hspace": 0.32})
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.9 / height)  # room for a 2-line title
    if title:
        fig.suptitle(title, fontsize=9, y=1 - 0.05 / height, va="top")
    block = nrows // len(rows)
    for b, row in enumerate(rows):
        top = b * block
        _overlay(axes[top, 0], photo, row.overlay, cmap)
        axes[top, 0].set_title(f"{row.title}\non the photo", fontsize=8, fontweight="bold")
        axes[top + 1, 0].imshow(row.map, cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
        axes[top + 1, 0].set_title("map", fontsize=7)
        for j in range(block * per_line):
            ax = axes[top + j // per_line, 1 + j % per_line]
            if j < len(row.patches):
                ax.imshow(row.patches[j].image, interpolation="nearest" if row.patches[j].image.shape[0] < 48 else None)
                ax.set_title(row.patches[j].title, fontsize=7)
        for ax in axes[top:top + block].ravel():
            ax.set_xticks([])
            ax.set_yticks([])
            if not ax.images:
                ax.axis("off")
    return fig


def selectivity_figure(shares: dict[str, np.ndarray], chance: float, threshold: float | None, k: int) -> Figure:
    """Top-class share of every live channel per layer (box and points), against the chance level."""
    fig = Figure(figsize=(6.5, 3.2), layout="constrained")
    ax = fig.subplots()
    labels = list(shares)
    data = [s[~np.isnan(s)] for s in shares.values()]
    ax.boxplot(data, showfliers=False, widths=0.5)
    rng = np.random.default_rng(0)
    for i, d in enumerate(data, start=1):
        ax.scatter(i + rng.uniform(-0.18, 0.18, len(d)), d, s=5, alpha=0.35, color="tab:blue")
    ax.axhline(chance, color="gray", linestyle="--", label=f"random {k} images: mean")
    if threshold is not None:
        ax.axhline(threshold, color="tab:red", linestyle=":", label="selective from here (≤ 1% of random draws)")
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_ylabel(f"share of the top class among\nthe channel's top {k} images", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=7, loc="upper left")
    return fig
