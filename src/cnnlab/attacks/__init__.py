"""Targeted L∞ adversarial attacks on images in [0, 1], and their robustness to transforms.

``ATTACKS`` is the registry of attack classes (``ascent``, ``pgd``, ``eot``); each takes the
model, ``eps`` and its options dataclass (``default_options``) and is called on a batch of
images and targets. The loop is :meth:`Attack.perturb` (:mod:`cnnlab.attacks.base`); the
``attack`` verb is in :mod:`cnnlab.attacks.run`, the ``robustness`` verb in :mod:`cnnlab.attacks.robustness`.
"""

from __future__ import annotations

from cnnlab.attacks.ascent import Ascent
from cnnlab.attacks.base import Attack, AttackOptions, AttackOutput, NoAttack, StepOutput, project, quantize_within
from cnnlab.attacks.eot import EOT
from cnnlab.attacks.pgd import PGD
from cnnlab.registry import Registry

ATTACKS: Registry[type[Attack]] = Registry("attack")
for _cls in (Ascent, PGD, EOT):
    ATTACKS.register(_cls.name, _cls)

__all__ = ["ATTACKS", "Ascent", "Attack", "AttackOptions", "AttackOutput", "EOT", "NoAttack", "PGD", "StepOutput",
           "project", "quantize_within"]
