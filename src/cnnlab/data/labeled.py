"""Labelled image files: the common currency of the image-classification datasets.

A dataset here is a list of image files with integer labels and the class names; decoding
happens later (in parallel, at extraction time) through :func:`cnnlab.images.load_image`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class LabeledImages:
    """Image files with labels ``0 .. len(classes)-1``; ``classes[i]`` names label ``i``."""

    paths: tuple[Path, ...]
    labels: tuple[int, ...]
    classes: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.paths) != len(self.labels):
            raise ValueError(f"{len(self.paths)} paths but {len(self.labels)} labels")
        bad = [y for y in self.labels if not 0 <= y < len(self.classes)]
        if bad:
            raise ValueError(f"labels {sorted(set(bad))[:5]} outside 0..{len(self.classes) - 1}")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, indices: Sequence[int]) -> LabeledImages:
        return LabeledImages(tuple(self.paths[i] for i in indices), tuple(self.labels[i] for i in indices), self.classes)

    def class_counts(self) -> np.ndarray:
        return np.bincount(np.asarray(self.labels, dtype=np.int64), minlength=len(self.classes))


@dataclass(frozen=True)
class ImageSplits:
    """A train/test pair over the same class list (``name`` is used in cache file names)."""

    name: str
    train: LabeledImages
    test: LabeledImages

    def __post_init__(self) -> None:
        if self.train.classes != self.test.classes:
            raise ValueError("train and test splits must share one class list")

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded stratified split of indices into (kept, held_out) with ``fraction`` held out per class.

    Every class keeps at least one example; a class with two or more examples holds out at
    least one, so each class present is seen on both sides whenever that is possible.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"split fraction must be in (0, 1), got {fraction}")
    labels_arr = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    held: list[int] = []
    for c in np.unique(labels_arr):
        idx = np.flatnonzero(labels_arr == c)
        rng.shuffle(idx)
        n_held = 0 if len(idx) < 2 else min(len(idx) - 1, max(1, round(fraction * len(idx))))
        held.extend(idx[:n_held].tolist())
        kept.extend(idx[n_held:].tolist())
    return sorted(kept), sorted(held)
