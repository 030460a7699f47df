"""Figures of the linear probe: pure functions, data in, ``Figure`` out (the caller saves)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_figure(cm: np.ndarray, classes: Sequence[str], *, title: str = "", normalize: bool = True):
    """Confusion matrix (rows: true class, columns: predicted), rows normalized to recall.

    Classes absent from the test labels get a grey row. Cell labels are drawn only when
    the matrix is small enough to read them.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    n = cm.shape[0]
    if cm.shape != (n, n) or len(classes) != n:
        raise ValueError(f"confusion matrix {cm.shape} does not match {len(classes)} classes")
    support = cm.sum(axis=1, keepdims=True)
    data = np.divide(cm, np.maximum(support, 1)) if normalize else cm
    size = max(4.0, 0.28 * n + 2.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(data, cmap="Blues", vmin=0, vmax=1 if normalize else None, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class" if normalize else "images")
    ticks = np.arange(n)
    fontsize = 9 if n <= 12 else 6
    ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=fontsize)
    ax.set_yticks(ticks, labels=list(classes), fontsize=fontsize)
    for i in np.flatnonzero(support[:, 0] == 0):  # no test images: grey row, not "0 % right"
        ax.axhspan(i - 0.5, i + 0.5, color="0.85", zorder=0.5)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= 12:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    value = f"{data[i, j]:.2f}" if normalize else str(cm[i, j])
                    ax.text(j, i, value, ha="center", va="center", fontsize=7,
                            color="white" if data[i, j] > 0.5 * (data.max() or 1) else "black")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def validation_curve_figure(grid: Sequence[float], scores: Sequence[float], chosen: float, *, title: str = ""):
    """Validation mean-per-class accuracy against C (log axis), chosen C marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ax.semilogx(grid, scores, marker="o")
    ax.axvline(chosen, color="tab:red", linestyle="--", label=f"chosen C = {chosen:.3g}")
    ax.set_xlabel("C (inverse regularization)")
    ax.set_ylabel("validation mean-per-class acc.")
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig
