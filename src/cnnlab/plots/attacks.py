"""Figures for adversarial examples: the N×3 attack grid and the robustness grid.

Pure functions: arrays and strings in, a matplotlib ``Figure`` out; saving is the caller's job.
Images are (H, W, 3) floats in [0, 1] or uint8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure


def _float(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    return img.astype(np.float64) / 255.0 if img.dtype == np.uint8 else img.astype(np.float64)


def amplified_noise(original: np.ndarray, adversarial: np.ndarray, amplify: float) -> np.ndarray:
    """0.5 + amplify × (adversarial − original), clipped to [0, 1]: mid-grey means no change."""
    return np.clip(0.5 + amplify * (_float(adversarial) - _float(original)), 0.0, 1.0)


@dataclass
class AttackRow:
    original: np.ndarray  # H, W, 3
    adversarial: np.ndarray  # H, W, 3, same size
    original_title: str  # e.g. "bell pepper 98.4%"
    adversarial_title: str  # e.g. "space shuttle 96.8%"
    label: str = ""  # the image's name


def attack_grid(rows: list[AttackRow], amplify: float, eps_grey: float | None = None) -> Figure:
    """N×3 grid: original, the noise amplified ``amplify`` times, the adversarial image."""
    aspects = [np.asarray(r.original).shape[0] / np.asarray(r.original).shape[1] for r in rows]  # H / W
    fig = Figure(figsize=(9.0, sum(3.0 * a + 0.35 for a in aspects)), layout="constrained")
    axes = fig.subplots(len(rows), 3, squeeze=False, gridspec_kw={"height_ratios": aspects})
    bound = f", |noise| ≤ {eps_grey:g}/255" if eps_grey is not None else ""
    for r, row in enumerate(rows):
        panels = (
            (_float(row.original), f"{row.label}: {row.original_title}" if row.label else row.original_title),
            (amplified_noise(row.original, row.adversarial, amplify), f"noise × {amplify:g}{bound}"),
            (_float(row.adversarial), f"adversarial: {row.adversarial_title}"),
        )
        for c, (img, title) in enumerate(panels):
            axes[r, c].imshow(img, interpolation="nearest")
            axes[r, c].set_title(title, fontsize=9)
            axes[r, c].axis("off")
    return fig


@dataclass
class RobustnessCell:
    image: np.ndarray  # H, W, 3
    title: str  # new top-1 and probability
    survived: bool  # the target is still top-1


def robustness_grid(rows: list[tuple[str, list[RobustnessCell]]], columns: list[str]) -> Figure:
    """One row per adversarial image, one column per transform; titles green where the target survives.

    The figure is 7.2 inches wide, the text width of an A4 page, so its 8-point titles print at 8
    points; a page of four rows fits one A4 page.
    """
    ncols = len(columns)
    aspects = [max(np.asarray(c.image).shape[0] / np.asarray(c.image).shape[1] for c in cells) for _, cells in rows]
    heights = [7.2 / ncols * a + 0.45 for a in aspects]  # the image at the column's width, plus its title
    fig = Figure(figsize=(7.2, sum(heights) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False, gridspec_kw={"height_ratios": heights})
    for r, (label, cells) in enumerate(rows):
        for c, cell in enumerate(cells):
            ax = axes[r, c]
            ax.imshow(_float(cell.image), interpolation="nearest")
            head = f"{columns[c]}\n" if r == 0 else ""
            ax.set_title(head + _wrap(cell.title), fontsize=8, color="tab:green" if cell.survived else "tab:red")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[r, 0].set_ylabel(label, fontsize=8)
    return fig


def _wrap(title: str, width: int = 18) -> str:
    """A class name and probability on lines of at most ``width`` characters (narrow columns)."""
    import textwrap

    return "\n".join(textwrap.wrap(title, width)) or title


def survival_vs_eps(curve: dict[str, dict[str, float]]) -> Figure:
    """Fraction of photos whose target survives all four transforms, against ε, one line per method."""
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for method, points in curve.items():
        eps = [float(e) for e in points]
        ax.plot(eps, [100 * v for v in points.values()], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ticks = sorted({float(e) for points in curve.values() for e in points})
    ax.set_xticks(ticks, [f"{e:g}/255" for e in ticks])
    ax.minorticks_off()
    ax.set_xlabel("ε (L∞ budget)")
    ax.set_ylabel("photos surviving all four transforms (%)")
    ax.set_ylim(-3, 103)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
