"""Report profiles: how much each experiment does. One place, with the reason for each value.

``tiny`` is the CI smoke profile (synthetic data, a few steps: seconds); ``quick`` is what
``make demo`` runs (shared data when present, short training: minutes on a 2-core CPU);
``full`` is the real thing (the models' full training schedules, the whole data sets).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    batchnorm: dict[str, Any] = field(default_factory=dict)
    predict: dict[str, Any] = field(default_factory=dict)
    featuremaps: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    train: dict[str, dict[str, Any]] = field(default_factory=dict)  # per CIFAR-10 model
    attack: dict[str, Any] = field(default_factory=dict)
    synthetic: bool = False  # experiments on made-up data (the smoke test), never the shared data


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny", "smoke test: synthetic data sets, a few training steps, one attack of a few steps",
        batchnorm={"batch_size": 16},
        predict={"top_k": 3},
        featuremaps={"per_stage": 5, "select": "selective", "top_k": 6},  # top images over a synthetic folder
        probe={"images_per_class": 6, "classes": 3},  # synthetic image folder
        # two epochs for the with/without-BatchNorm loss comparison; one for `improved`
        train={"hw-mish": {"epochs": 2, "limit_train": 32, "limit_test": 20, "batch_size": 16},
               "hw-mish-bn": {"epochs": 2, "limit_train": 32, "limit_test": 20, "batch_size": 16},
               "improved": {"epochs": 1, "limit_train": 32, "limit_test": 20, "batch_size": 16}},
        attack={"images": 1, "steps": 2, "methods": ("pgd",), "model_resolution": True},
        synthetic=True,
    ),
    "quick": Profile(
        "quick", "demo: shared data, a short CIFAR-10 training per network, the Pets subset, all attacks",
        batchnorm={"batch_size": 32},
        predict={"top_k": 3},
        featuremaps={"per_stage": 5, "select": "selective", "top_k": 8},  # Pets (20 per class, the default) + photos
        probe={},  # the Pets copy present under the data root (the shared subset here)
        # ~2 epochs on a 10k subset per net keeps CIFAR-10 to a few minutes on 2 cores. No
        # test-time augmentation: after 2 epochs it adds under a point (39.3 vs 38.5 % for hw-mish)
        # and costs six more passes over the 10,000 test images, about 150 s per net in fp32 on an
        # AVX2 CPU (benchmarks/RESULTS.md, session 6); the full profile keeps the recipes' TTA.
        train={"hw-mish": {"epochs": 2, "limit_train": 10000, "tta": False},
               "hw-mish-bn": {"epochs": 2, "limit_train": 10000, "tta": False},
               "improved": {"epochs": 2, "limit_train": 10000, "tta": False}},
        attack={"methods": ("ascent", "pgd", "eot"), "sweep_eps": (1, 2, 4, 8)},
    ),
    "full": Profile(
        "full", "the real thing: full data sets and each network's full training schedule",
        batchnorm={"batch_size": 64},
        predict={"top_k": 3},
        featuremaps={"per_stage": 5, "select": "selective", "top_k": 8, "max_per_class": 0},  # all Pets + photos
        probe={},
        train={"hw-mish": {}, "hw-mish-bn": {}, "improved": {}},  # the models' own recipes
        attack={"methods": ("ascent", "pgd", "eot"), "sweep_eps": (1, 2, 4, 8)},
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[name]
