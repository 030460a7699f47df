"""cnnlab: a laboratory for convolutional networks.

The Python API mirrors the command line: every verb is a module with an option dataclass
``Config`` and a typed ``run(config) -> Result``, and the CLI is generated from them. They are
also exported here as ``run_<verb>`` and ``<Verb>Config``:

    from cnnlab import run_predict, PredictConfig
    result = run_predict(PredictConfig(images=["peppers.png"], top_k=5))
    print(result.predictions[0].classes)

(the verb modules themselves are listed in ``cnnlab.cli.VERBS``). Names load lazily, so
``import cnnlab`` and ``cnnlab --help`` stay fast (no torch import).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> (module, attribute); run_<verb> and <Verb>Config are added from the CLI's table.
_LAZY: dict[str, tuple[str, str]] = {
    "load_image": ("cnnlab.images", "load_image"),
    "load_pretrained": ("cnnlab.models.pretrained", "load_pretrained"),
    "seed_everything": ("cnnlab.runs", "seed_everything"),
}


def _verb_api() -> dict[str, tuple[str, str]]:
    from cnnlab.cli import VERBS

    api = {}
    for verb, (module, _) in VERBS.items():
        api[f"run_{verb}"] = (module, "run")
        api["".join(w.capitalize() for w in verb.split("_")) + "Config"] = (module, "Config")
    return api


_LAZY.update(_verb_api())

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")
