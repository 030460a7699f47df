"""Tiny stand-ins for the probe tests: a small CNN behind the real wrapper, synthetic image folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

COLOURS = {"red": (200, 40, 40), "green": (40, 180, 60), "blue": (40, 60, 200)}


def tiny_model(feature_dim: int = 8):
    """A 2-layer CNN (global pooling, then Linear to 1000) inside ImageNetClassifier."""
    from cnnlab.models.pretrained import ImageNetClassifier, resolve

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, feature_dim, kernel_size=8, stride=8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(feature_dim, 1000),
    )
    return ImageNetClassifier(net, resolve("mobilenet_v2")).eval()


def make_folder(root: Path, per_class: int = 6, size: int = 40, seed: int = 0, layout: str = "pool") -> Path:
    """Noisy solid-colour images, one class per colour; ``layout`` is ``pool`` or ``split``."""
    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        for i in range(per_class):
            sub = root / name if layout == "pool" else root / ("train" if i < per_class * 2 // 3 else "test") / name
            sub.mkdir(parents=True, exist_ok=True)
            arr = np.clip(np.array(rgb) + rng.normal(0, 25, (size, size + 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(sub / f"{name}_{i}.png")
    return root
