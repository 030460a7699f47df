"""cnnlab: a laboratory for convolutional networks.

The Python API mirrors the command line: every verb is a ``run(config)`` function with an
option dataclass. Heavy modules (torch) load only when a name below is first used, so
``import cnnlab`` and ``cnnlab --help`` stay fast.

    from cnnlab import predict, PredictConfig
    result = predict(PredictConfig(images=["peppers.png"]))
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute)
_LAZY: dict[str, tuple[str, str]] = {
    "predict": ("cnnlab.predict", "run"),
    "PredictConfig": ("cnnlab.predict", "Config"),
    "featuremaps": ("cnnlab.featuremaps.run", "run"),
    "FeatureMapsConfig": ("cnnlab.featuremaps.run", "Config"),
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
