"""cnnlab: a laboratory for convolutional networks.

The Python API mirrors the command line: every verb is a module with an option dataclass
``Config`` and a typed ``run(config) -> Result`` (the CLI is generated from them):

    from cnnlab import predict
    result = predict.run(predict.Config(images=["peppers.png"], top_k=5))
    print(result.predictions[0].classes)

Verb modules: ``cnnlab.predict``, ``cnnlab.featuremaps.run``, ``cnnlab.models.listing``,
``cnnlab.demo`` (see ``cnnlab.cli.VERBS`` for all). Helpers below load lazily, so
``import cnnlab`` and ``cnnlab --help`` stay fast (no torch import).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "batchnorm": ("cnnlab.batchnorm", "run"),
    "BatchNormConfig": ("cnnlab.batchnorm", "Config"),
    "report": ("cnnlab.report.build", "run"),
    "ReportConfig": ("cnnlab.report.build", "Config"),
    "load_image": ("cnnlab.images", "load_image"),
    "load_pretrained": ("cnnlab.models.pretrained", "load_pretrained"),
    "seed_everything": ("cnnlab.runs", "seed_everything"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
