"""Choose "interesting" channels of a feature map, by a documented score.

For a channel map A (H×W):

* **dead**: A is (almost) constant: ``std(A) <= 1e-6 · (1 + max|A|)``; such channels score 0;
* **contrast** = ``std(A) / (std(A) + |mean(A)|)`` in [0, 1]: high when the map varies a lot
  relative to its offset (a map that is all positive except a few pixels scores low);
* **structure** = the lag-1 spatial autocorrelation of A (mean of the horizontal and vertical
  neighbour correlations), clipped to [0, 1]: near 1 for smooth shapes and edges, near 0 for
  pixel noise;
* **score** = contrast × structure.

Channels are taken in order of decreasing score, skipping any whose map correlates above
``max_similarity`` (default 0.9) with one already taken, so the chosen maps are not near
duplicates of each other.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

SCORE_DEFINITION = (
    "score = contrast × structure, where contrast = std/(std+|mean|) and structure = the map's "
    "lag-1 spatial autocorrelation (clipped to [0,1]); dead (constant) channels score 0; "
    "near-duplicates (correlation > max_similarity with a chosen map) are skipped."
)


@dataclass
class ChannelScore:
    channel: int
    score: float
    contrast: float
    structure: float
    dead: bool


def _autocorr(a: torch.Tensor, dim: int) -> torch.Tensor:
    """Correlation between each map and itself shifted by one pixel along ``dim`` (C,)."""
    x, y = a.narrow(dim, 0, a.shape[dim] - 1), a.narrow(dim, 1, a.shape[dim] - 1)
    x = x.flatten(1) - x.flatten(1).mean(1, keepdim=True)
    y = y.flatten(1) - y.flatten(1).mean(1, keepdim=True)
    return (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1)).clamp_min(1e-12)


def score_channels(fmap: torch.Tensor) -> list[ChannelScore]:
    """Score every channel of one feature map (C, H, W)."""
    C, H, W = fmap.shape
    a = fmap.float()
    flat = a.flatten(1)  # C, H*W
    std, mean = flat.std(1), flat.mean(1)
    dead = std <= 1e-6 * (1 + flat.abs().amax(1))
    contrast = std / (std + mean.abs()).clamp_min(1e-12)
    if H > 1 and W > 1:
        structure = ((_autocorr(a, 1) + _autocorr(a, 2)) / 2).clamp(0, 1)
    else:
        structure = torch.zeros(C)
    score = torch.where(dead, torch.zeros_like(contrast), contrast * structure)
    return [ChannelScore(c, float(score[c]), float(contrast[c]), float(structure[c]), bool(dead[c])) for c in range(C)]


def choose_channels(fmap: torch.Tensor, k: int = 5, max_similarity: float = 0.9,
                    rank: Sequence[float] | None = None, groups: Sequence[int] | None = None) -> list[ChannelScore]:
    """The ``k`` best non-dead, mutually dissimilar channels of ``fmap`` (C, H, W).

    "Best" is the highest score, or, when ``rank`` (C,) is given, the highest ``rank`` (ties and
    NaN ranks last, by score): e.g. the channels' selectivity on an image set. With ``groups``
    (C,), e.g. each channel's preferred class, at most one channel per group is taken while
    channels of untaken groups remain.
    """
    scores = score_channels(fmap)
    flat = fmap.float().flatten(1)
    flat = flat - flat.mean(1, keepdim=True)
    flat = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)
    if rank is None:
        order = sorted(scores, key=lambda s: (s.dead, -s.score))
    else:
        order = sorted(scores, key=lambda s: (s.dead, math.isnan(rank[s.channel]),
                                              -(0.0 if math.isnan(rank[s.channel]) else rank[s.channel]), -s.score))
    chosen: list[ChannelScore] = []
    for s in order:
        if s.dead or (rank is not None and math.isnan(rank[s.channel])):
            break  # the rest is dead, or unranked (left to the fallback below)
        if any(float(flat[s.channel] @ flat[c.channel]) > max_similarity for c in chosen):
            continue
        if groups is not None and groups[s.channel] in {groups[c.channel] for c in chosen}:
            continue
        chosen.append(s)
        if len(chosen) == k:
            break
    if len(chosen) < k:  # fall back to the best remaining live channels, similar or not
        taken = {c.channel for c in chosen}
        chosen += [s for s in order if not s.dead and s.channel not in taken][: k - len(chosen)]
    return chosen


def normalize01(fmap: torch.Tensor) -> torch.Tensor:
    """Scale each map (..., H, W) to [0, 1] on its own; a constant map becomes all zeros."""
    lo = fmap.amin(dim=(-2, -1), keepdim=True)
    hi = fmap.amax(dim=(-2, -1), keepdim=True)
    return ((fmap - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)
