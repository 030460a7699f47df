"""Training figures: loss/accuracy curves, run comparisons, first-layer filter grids."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def plot_history(history: Sequence[dict[str, float]], title: str = "") -> Figure:
    """Loss (left) and accuracy (right) per epoch, train and test.

    The train loss is the training objective (label-smoothed cross-entropy on augmented
    batches, averaged over the epoch); the test loss is the plain cross-entropy.
    """
    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(10, 4))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    if all("val_loss" in h for h in history):
        ax_loss.plot(epochs, [h["val_loss"] for h in history], "^-", label="validation")
    ax_loss.plot(epochs, [h["test_loss"] for h in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    if all("val_accuracy" in h for h in history):
        ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history], "^-", label="validation")
    ax_acc.plot(epochs, [100 * h["test_accuracy"] for h in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_comparison(histories: dict[str, Sequence[dict[str, float]]], metric: str = "train_loss",
                    title: str = "") -> Figure:
    """One ``metric`` per epoch for several runs on the same axes (label -> history)."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for label, history in histories.items():
        ax.plot([h["epoch"] for h in history], [h[metric] for h in history], "o-", markersize=3, label=label)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title or f"{metric.replace('_', ' ')} per epoch")
    values = [row[metric] for hist in histories.values() for row in hist]
    if "loss" in metric and values and min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")  # long runs: the loss spans decades
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig


def filter_grid(weight: torch.Tensor, rows: int | None = None, scale: int = 4, gap: int = 1) -> np.ndarray:
    """First-layer filters (N, 3, k, k) as one RGB image (rows x cols tiles), values in [0, 1].

    Each filter is contrast-stretched on its own: subtract its minimum over all three channels,
    divide by its new maximum. Each is enlarged ``scale`` times with nearest-neighbour and
    tiles are separated by ``gap`` white pixels. 64 filters give a 4 x 16 grid.
    """
    N, C, kh, kw = weight.shape
    if C != 3:
        raise ValueError(f"filter grid needs RGB filters (N, 3, k, k), got {tuple(weight.shape)}")
    rows = rows or (4 if N % 4 == 0 else math.ceil(math.sqrt(N)))
    cols = math.ceil(N / rows)
    w = weight.detach().float().cpu()
    w = w - w.amin(dim=(1, 2, 3), keepdim=True)
    w = w / w.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)  # each filter in [0, 1]
    w = w.repeat_interleave(scale, dim=2).repeat_interleave(scale, dim=3)  # N, 3, k*s, k*s
    th, tw = kh * scale, kw * scale
    grid = np.ones((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), dtype=np.float32)
    for i in range(N):
        r, c = divmod(i, cols)
        grid[r * (th + gap):r * (th + gap) + th, c * (tw + gap):c * (tw + gap) + tw] = w[i].permute(1, 2, 0).numpy()
    return grid


def plot_filters(weight: torch.Tensor, title: str = "", rows: int | None = None) -> Figure:
    """The filter grid of :func:`filter_grid` as a figure."""
    N, _, kh, _ = weight.shape
    scale = max(1, 44 // kh)
    grid = filter_grid(weight, rows=rows, scale=scale)
    H, W, _ = grid.shape
    fig = Figure(figsize=(max(4.0, W / 40), max(1.5, H / 40) + 0.5))
    ax = fig.subplots()
    ax.imshow(grid, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"{N} first-layer filters ({kh}x{kh}x3), each contrast-stretched")
    fig.tight_layout()
    return fig


def plot_lr_sweep(rows: Sequence[dict], epochs: int) -> Figure:
    """Validation accuracy against the peak learning rate, one line per model; diverged runs as x at 0."""
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for model in dict.fromkeys(r["model"] for r in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["lr"])
        ok = [r for r in mine if not r["diverged"]]
        line, = ax.plot([r["lr"] for r in ok], [100 * r["val_accuracy"] for r in ok], "o-", label=model)
        bad = [r for r in mine if r["diverged"]]
        if bad:
            ax.plot([r["lr"] for r in bad], [0] * len(bad), "x", color=line.get_color(), markersize=10,
                    mew=2, label=f"{model}: diverged")
    ax.set_xscale("log")
    ax.set(xlabel="peak learning rate", ylabel="validation accuracy (%)",
           title=f"learning-rate sweep, {epochs} epochs each")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    return fig
