"""Class selectivity of a channel, measured on a labelled image set against chance.

For a channel, take its top-k images among the labelled ones (:func:`cnnlab.featuremaps.tuning.top_images`)
and their classes:

* **top share** = the count of the most frequent class among them / k;
* **entropy** = the entropy (bits) of their class distribution;
* **chance**: the same two numbers for ``draws`` random k-subsets of the labelled images
  (seeded), which accounts for unequal class sizes;
* **selectivity** = 1 − entropy / (mean entropy of the random subsets): 0 for a channel whose
  top images are as mixed as a random draw, 1 when they all share one class;
* **p-value** = the fraction of random k-subsets whose top share is at least the channel's; a
  channel is **selective** when ``p <= alpha`` (a one-sided test per channel, so about ``alpha``
  of the channels of a layer pass by luck alone; with few images per class or a small k even a
  single-class top-k may not reach it); the others are **mixed**: their strongest responses
  spread over classes as a random draw would (polysemantic at the level of these classes).

Channels that are constant over the whole set (dead on it) get NaN and are left out of the
per-layer summaries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DRAWS = 2000  # random k-subsets for the chance level
ALPHA = 0.01  # per-channel test level for "selective"

SELECTIVITY_DEFINITION = (
    "over the labelled images of the set, a channel's top-k images (highest map maximum) have a top-class share "
    "(the most frequent class's count / k) and a class entropy; selectivity = 1 − entropy / (mean entropy of "
    "random k-subsets), 0 as mixed as a random draw, 1 all one class; a channel is selective when at most 1% of "
    "random k-subsets reach its top-class share, mixed otherwise."
)


def _entropy_and_share(classes: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Entropy (bits) and top-class share of each row of ``classes`` (R, k)."""
    R, k = classes.shape
    counts = np.zeros((R, n_classes))
    np.add.at(counts, (np.repeat(np.arange(R), k), classes.ravel()), 1)
    p = counts / k
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.nansum(np.where(p > 0, p * np.log2(p), 0.0), axis=1)
    return ent, counts.max(axis=1) / k


@dataclass
class Chance:
    """What a random k-subset of the labelled images gives."""

    k: int
    draws: int
    mean_top_share: float
    top_share_threshold: float | None  # the smallest top share with p <= alpha (None: no share reaches it)
    mean_entropy_bits: float
    alpha: float
    random_top_shares: list[float]  # the draws' top shares, for the p-values

    def p_value(self, share: np.ndarray) -> np.ndarray:
        """Fraction of random k-subsets with a top share at least ``share`` (elementwise)."""
        draws = np.sort(np.asarray(self.random_top_shares))
        below = np.searchsorted(draws, np.asarray(share) - 1e-9, side="left")  # draws < share
        return (len(draws) - below) / len(draws)


def chance_level(labels: np.ndarray, k: int, seed: int = 0, draws: int = DRAWS, alpha: float = ALPHA) -> Chance:
    """Top share and entropy of ``draws`` random k-subsets (without replacement) of ``labels``."""
    rng = np.random.default_rng(seed)
    idx = np.argsort(rng.random((draws, len(labels))), axis=1)[:, :k]  # draws, k distinct indices
    ent, share = _entropy_and_share(labels[idx], int(labels.max()) + 1)
    chance = Chance(k, draws, float(share.mean()), None, float(ent.mean()), alpha, share.tolist())
    levels = np.arange(1, k + 1) / k
    passing = levels[chance.p_value(levels) <= alpha]
    chance.top_share_threshold = float(passing[0]) if len(passing) else None
    return chance


@dataclass
class ChannelSelectivity:
    """Per channel (C,) arrays; NaN for channels dead on the set."""

    top_share: np.ndarray
    entropy_bits: np.ndarray
    selectivity: np.ndarray
    top_class: np.ndarray  # label of the most frequent class among the top images (-1 when dead)
    p_value: np.ndarray  # of the top share against random k-subsets (NaN when dead)
    selective: np.ndarray  # bool


def channel_selectivity(top: np.ndarray, labels: np.ndarray, alive: np.ndarray, chance: Chance) -> ChannelSelectivity:
    """Selectivity of every channel from its top images ``top`` (C, k) and the images' ``labels``."""
    classes = labels[top]  # C, k
    n_classes = int(labels.max()) + 1
    ent, share = _entropy_and_share(classes, n_classes)
    top_class = np.array([np.bincount(row, minlength=n_classes).argmax() for row in classes])
    sel = 1.0 - ent / max(chance.mean_entropy_bits, 1e-12)
    nan = np.where(alive, 1.0, np.nan)
    p = chance.p_value(share)
    return ChannelSelectivity(share * nan, ent * nan, sel * nan, np.where(alive, top_class, -1), p * nan,
                              alive & (p <= chance.alpha))


@dataclass
class LayerSummary:
    """Selectivity over all channels of a layer alive on the set."""

    channels: int
    alive: int
    mean_selectivity: float
    median_selectivity: float
    mean_top_share: float
    selective: int
    mixed: int
    selective_fraction: float


def summarize(sel: ChannelSelectivity) -> LayerSummary:
    alive = ~np.isnan(sel.selectivity)
    n = int(alive.sum())
    if n == 0:
        return LayerSummary(len(alive), 0, float("nan"), float("nan"), float("nan"), 0, 0, float("nan"))
    s = int(sel.selective.sum())
    return LayerSummary(len(alive), n, float(np.nanmean(sel.selectivity)), float(np.nanmedian(sel.selectivity)),
                        float(np.nanmean(sel.top_share)), s, n - s, s / n)
