"""The report's sections, in the order they appear."""

from __future__ import annotations

import importlib
from types import ModuleType

ORDER = ("batchnorm", "prediction", "featuremaps", "transfer", "cifar10", "adversarial")


def modules() -> list[ModuleType]:
    return [importlib.import_module(f"cnnlab.report.sections.{name}") for name in ORDER]
