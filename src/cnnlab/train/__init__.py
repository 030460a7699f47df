"""Train cnnlab's CIFAR-10 networks: ``run(Config(model=..., epochs=...)) -> Result``.

    from cnnlab.train import Config, run
    result = run(Config.from_flat(model="hw-mish-bn", epochs=20, out="runs/train/bn"))
    result.test_accuracy, result.run_dir

The verb's documentation is in ``cnnlab.train.experiment``; recipes in ``cnnlab.train.config``.
"""

from cnnlab.train.config import RECIPE_VERSION, RECIPES, Config, Recipe, run_key
from cnnlab.train.experiment import Result, present, run
from cnnlab.train.experiment import __doc__ as _verb_doc

__doc__ = _verb_doc
__all__ = ["Config", "Recipe", "RECIPES", "RECIPE_VERSION", "Result", "run", "run_key", "present"]
