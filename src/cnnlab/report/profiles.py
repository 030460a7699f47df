"""Report profiles: how much each experiment does. One place, with the reason for each value.

``tiny`` is the CI smoke profile (synthetic data, a few steps: seconds); ``quick`` is what
``make demo`` runs (shared data when present, short training: minutes on a 2-core CPU);
``full`` is the real thing (the models' full training schedules, the whole data sets).
"""

from __future__ import annotations

import dataclasses
import importlib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Options = dict[str, Any]  # field name of a verb's Config -> value (unset fields keep the verb's default)


@dataclass(frozen=True)
class Verb:
    """The verb an option group of a profile configures, and the keys its section reads itself."""

    module: str  # the module whose ``Config`` takes the options
    section_keys: tuple[str, ...] = ()  # consumed by the report's section, never passed to the Config


# Profile field -> the verb it configures.
VERBS: dict[str, Verb] = {
    "batchnorm": Verb("cnnlab.batchnorm"),
    "predict": Verb("cnnlab.predict"),
    "featuremaps": Verb("cnnlab.featuremaps.run", ("classes", "images_per_class")),  # the synthetic image set
    "probe": Verb("cnnlab.probe.run", ("classes", "images_per_class")),  # the synthetic image folder
    "train": Verb("cnnlab.train"),  # one option group per CIFAR-10 model
    "bn_study": Verb("cnnlab.train.study"),  # hw-mish against hw-mish-bn under one recipe, and an lr sweep
    # methods attacked, how many of the report's photos (None: the attack's default photos),
    # options per method, and the extra ε (grey levels) of the price-of-robustness sweep
    "attack": Verb("cnnlab.attacks.run", ("methods", "images", "per_method", "sweep_eps")),
}


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    batchnorm: Options = field(default_factory=dict)
    predict: Options = field(default_factory=dict)
    featuremaps: Options = field(default_factory=dict)
    probe: Options = field(default_factory=dict)
    train: dict[str, Options] = field(default_factory=dict)  # per CIFAR-10 model
    bn_study: Options = field(default_factory=dict)  # empty: the CIFAR-10 section runs no BatchNorm study
    attack: Options = field(default_factory=dict)
    synthetic: bool = False  # experiments on made-up data (the smoke test), never the shared data

    def option_groups(self) -> list[tuple[str, str, Mapping[str, Any]]]:
        """``(profile field, label, options)`` for every option group, one per model for ``train``."""
        groups = []
        for name in VERBS:
            value = getattr(self, name)
            if name == "train":
                groups += [(name, f"train[{model}]", opts) for model, opts in value.items()]
            else:
                groups.append((name, name, value))
        return groups


def unknown_options(profile: Profile) -> list[str]:
    """Options of ``profile`` that neither the verb's ``Config`` nor its section knows, as
    ``"group.option"``; a verb whose module is not installed is skipped."""
    unknown = []
    for name, label, options in profile.option_groups():
        verb = VERBS[name]
        try:
            config = importlib.import_module(verb.module).Config
        except ModuleNotFoundError as exc:
            if not (exc.name or "").startswith("cnnlab"):
                raise
            continue
        unknown += _unknown(config, {k: v for k, v in options.items() if k not in verb.section_keys}, label)
    return unknown


def _unknown(config: type, options: Mapping[str, Any], label: str) -> list[str]:
    """Keys of ``options`` that are not fields of the dataclass ``config``; a dict given for a
    field whose type includes a dataclass (an option group such as a recipe) is checked against it."""
    hints = typing.get_type_hints(config)
    fields = {f.name for f in dataclasses.fields(config)}
    unknown = []
    for key, value in options.items():
        if key not in fields:
            unknown.append(f"{label}.{key}")
            continue
        groups = [t for t in typing.get_args(hints[key]) or (hints[key],) if dataclasses.is_dataclass(t)]
        if isinstance(value, Mapping) and groups:
            unknown += _unknown(groups[0], value, f"{label}.{key}")
    return unknown


def check_profile(profile: Profile) -> Profile:
    """``profile``, after checking that each option names a field of its verb's ``Config``."""
    unknown = unknown_options(profile)
    if unknown:
        raise ValueError(f"profile {profile.name!r} sets options its verbs do not have: {', '.join(unknown)}")
    return profile


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        "tiny", "smoke test: synthetic data sets, a few training steps, one attack of a few steps",
        batchnorm={"batch_size": 16},
        predict={"top_k": 3},
        featuremaps={"per_stage": 5, "select": "selective", "top_k": 6},  # top images over a synthetic folder
        probe={"images_per_class": 6, "classes": 3},  # synthetic image folder
        # two epochs for the with/without-BatchNorm loss comparison; one for `improved`
        train={"hw-mish": {"recipe": {"epochs": 2, "batch_size": 16}, "limit_train": 32, "limit_test": 20},
               "hw-mish-bn": {"recipe": {"epochs": 2, "batch_size": 16}, "limit_train": 32, "limit_test": 20},
               "improved": {"recipe": {"epochs": 1, "batch_size": 16}, "limit_train": 32, "limit_test": 20}},
        # the pair is the hw-mish run above and hw-mish-bn with its options; the sweep: 100 training
        # images of which 20 validate, two rates, one epoch each
        bn_study={"sweep_epochs": 1, "sweep_lrs": (0.05, 0.4), "val_split": 20, "limit_train": 100,
                  "limit_test": 20},
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
        # AVX2 CPU (benchmarks/RESULTS.md, "Why `quick` trains without TTA"); the full profile keeps the recipes' TTA.
        train={"hw-mish": {"recipe": {"epochs": 2, "tta": False}, "limit_train": 10000},
               "hw-mish-bn": {"recipe": {"epochs": 2, "tta": False}, "limit_train": 10000},
               "improved": {"recipe": {"epochs": 2, "tta": False}, "limit_train": 10000}},
        # minutes, not a measurement: the pair is hw-mish above and hw-mish-bn with its options; the
        # sweep trains 1,500 of 2,000 images for one epoch at two rates
        bn_study={"sweep_epochs": 1, "sweep_lrs": (0.05, 0.4), "val_split": 500, "limit_train": 2000},
        attack={"methods": ("ascent", "pgd", "eot"), "sweep_eps": (1, 2, 4, 8)},
    ),
    "full": Profile(
        "full", "the real thing: full data sets and each network's full training schedule",
        batchnorm={"batch_size": 64},
        predict={"top_k": 3},
        featuremaps={"per_stage": 5, "select": "selective", "top_k": 8, "max_per_class": 0},  # all Pets + photos
        probe={},
        train={"hw-mish": {}, "hw-mish-bn": {}, "improved": {}},  # the models' own recipes
        # the pair: the hw-mish run above (its whole recipe, all 50,000 images) and hw-mish-bn trained
        # with its options; the sweep tries hw-mish's lr (0.05), hw-mish-bn's (0.2) and twice that,
        # Muon's lr scaled alike, on 45,000 images, 2 epochs each
        bn_study={"sweep_epochs": 2, "sweep_lrs": (0.05, 0.2, 0.4), "val_split": 5000},
        attack={"methods": ("ascent", "pgd", "eot"), "sweep_eps": (1, 2, 4, 8)},
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    return PROFILES[name]
