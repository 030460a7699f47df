"""What BatchNorm changes in training, one change at a time: ``hw-mish`` against ``hw-mish-bn``.

Two experiments:

* **Same recipe.** Both networks train under one identical recipe (by default ``hw-mish``'s own:
  schedule, epochs, augmentation, optimizer, seed), so their loss curves differ only by the
  BatchNorm layers. By default on a validation split of the training set. With ``--pair-from RUN``
  a finished ``cnnlab train`` run of one net is one side of the pair and the other net trains with
  exactly that run's options (recipe, seed, data, test images): the report pairs its own
  ``hw-mish`` run this way instead of training ``hw-mish`` a second time. Nothing is chosen from
  the pair, so when that run trained on all the training images its test accuracy is compared.
* **Learning-rate sweep.** Both networks train briefly at each of a few peak learning rates
  (everything else as the shared recipe) on the validation split; per run the validation accuracy
  and whether training diverged (the loss became NaN/inf, or the net ended at chance level). It
  shows whether BatchNorm tolerates larger steps.

Every run is an ordinary ``cnnlab train`` run folder under ``--out`` (so an interrupted study
resumes and finished runs are reused); ``study.json`` collects the numbers, ``curves.png`` and
``sweep.png`` show them.

Example: cnnlab bn-study --epochs 10 --sweep-lrs 0.05 0.1 0.2 0.4 --out runs/bn-study
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.options import RunOptions, arg
from cnnlab.runs import new_run_dir, save_figure, write_json
from cnnlab.train import experiment
from cnnlab.train.config import RECIPES, Config as TrainConfig, Recipe
from cnnlab.train.loop import TrainingDiverged

log = logging.getLogger(__name__)

MODELS = ("hw-mish", "hw-mish-bn")
CHANCE = 0.15  # a 10-class net that ends at or below this validation accuracy learned nothing


@dataclass(kw_only=True)
class Config(RunOptions):
    """Train hw-mish and hw-mish-bn under one recipe, and sweep the peak learning rate."""

    recipe_of: str = arg("hw-mish", "whose training recipe both networks share", choices=MODELS)
    epochs: int | None = arg(None, "epochs of the same-recipe runs (default: that recipe's)")
    pair_from: Path | None = arg(None, "a finished cnnlab train run of hw-mish or hw-mish-bn: one side of the "
                                       "same-recipe pair; the other net trains with exactly its options, and "
                                       "its recipe replaces --recipe-of's (an unfinished run is resumed first)")
    sweep_lrs: tuple[float, ...] = arg((0.05, 0.1, 0.2, 0.4), "peak learning rates of the sweep (with Muon, "
                                                                 "Muon's lr keeps its ratio to the peak rate)")
    sweep_epochs: int = arg(4, "epochs of each sweep run")
    val_split: int = arg(5000, "held-out training images for validation (class-balanced)")
    limit_train: int | None = arg(None, "use only the first N training images (smoke runs)")
    # The study reads validation numbers only; each run still records a test accuracy per epoch, so
    # it evaluates a small part of the test set (the whole one would take most of a short run's time).
    limit_test: int | None = arg(1000, "test images each run evaluates (recorded, not used by the study)")
    precision: str = arg("auto", "as cnnlab train --precision", choices=("auto", "bf16", "fp32"))
    data_root: Path | None = arg(None, "folder holding cifar-10-batches-bin/ (default: as cnnlab train)")
    verify_md5: bool = arg(True, "as cnnlab train --verify-md5 (off for your own files)")

    def __post_init__(self) -> None:
        if self.recipe_of not in MODELS:
            raise ValueError(f"--recipe-of must be one of {', '.join(MODELS)}")
        if not self.sweep_lrs or min(self.sweep_lrs) <= 0:
            raise ValueError("--sweep-lrs needs at least one positive learning rate")
        for name in ("epochs", "sweep_epochs", "val_split"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
        if self.pair_from is not None:
            self.pair_from = Path(self.pair_from)
            if self.epochs is not None:
                raise ValueError("--epochs does not apply with --pair-from: the run's recipe sets the epochs")


@dataclass
class Result:
    out: Path
    recipe: dict[str, Any]                  # the shared recipe of the same-recipe runs
    recipe_of: str | None                   # whose default recipe it is (None: a --pair-from run's own)
    same_recipe: dict[str, dict[str, Any]]  # model -> {run_dir, history, val_accuracy, ...}
    sweep: list[dict[str, Any]]             # {model, lr, diverged, val_accuracy, train_loss, run_dir}


def shared_recipe(config: Config) -> Recipe:
    """``recipe_of``'s recipe with the study's epochs, without test-time augmentation: the study
    compares plain validation accuracies, and TTA changes no training."""
    recipe = RECIPES[config.recipe_of]
    return dataclasses.replace(recipe, epochs=config.epochs or recipe.epochs, tta=False)


def train_config(config: Config, model: str, recipe: Recipe, out: Path) -> TrainConfig:
    """A ``cnnlab train`` config for ``model`` trained with ``recipe``."""
    return TrainConfig(model=model, recipe=recipe, val_split=config.val_split, limit_train=config.limit_train,
                       limit_test=config.limit_test, precision=config.precision, data_root=config.data_root,
                       verify_md5=config.verify_md5,
                       seed=config.seed, deterministic=config.deterministic, device=config.device,
                       quiet=config.quiet, out=out)


def _summary(result: experiment.Result) -> dict[str, Any]:
    return dict(run_dir=str(result.run_dir), history=result.history, val_accuracy=result.val_accuracy_plain,
                test_accuracy=result.test_accuracy, test_accuracy_plain=result.test_accuracy_plain,
                train_loss=result.history[-1]["train_loss"] if result.history else None,
                train_seconds=result.train_seconds, cached=result.cached)


def at_lr(recipe: Recipe, lr: float) -> Recipe:
    """``recipe`` with peak learning rate ``lr``; with Muon, Muon's lr keeps its ratio to it, so the
    sweep scales every step, the filters' too. Rounded to 12 significant digits, so that the
    recorded rate reads as written (0.05 · 0.2 / 0.05 would otherwise be 0.20000000000000004)."""
    muon_lr = float(f"{recipe.muon_lr * lr / recipe.lr:.12g}") if recipe.optimizer == "muon" else recipe.muon_lr
    return dataclasses.replace(recipe, lr=lr, muon_lr=muon_lr)


def sweep_run(config: Config, model: str, recipe: Recipe, out: Path) -> dict[str, Any]:
    """One sweep point; divergence is a result, not an error."""
    point = dict(model=model, lr=recipe.lr, muon_lr=recipe.muon_lr)
    try:
        result = experiment.run(train_config(config, model, recipe, out))
    except TrainingDiverged as exc:
        log.info("%s at lr %g diverged: %s", model, recipe.lr, exc)
        return dict(point, diverged=True, reason="loss became NaN/inf", val_accuracy=None, train_loss=None,
                    run_dir=str(out))
    row = dict(point, **_summary(result))
    del row["history"]
    row["diverged"] = row["val_accuracy"] <= CHANCE
    row["reason"] = "chance-level validation accuracy" if row["diverged"] else ""
    return row


def same_recipe_runs(config: Config, out: Path) -> tuple[Recipe, str | None, dict[str, dict[str, Any]]]:
    """(shared recipe, whose default it is, model -> summary) of the same-recipe pair."""
    if config.pair_from is None:
        recipe = shared_recipe(config)
        return recipe, config.recipe_of, {m: _summary(experiment.run(train_config(config, m, recipe, out / f"same-{m}")))
                                          for m in MODELS}
    here = TrainConfig(quiet=config.quiet, device=config.device, data_root=config.data_root)
    given = experiment.config_from_folder(config.pair_from, here, option="--pair-from")
    if given.model not in MODELS:
        raise CnnlabError(f"--pair-from {config.pair_from}: a run of {given.model}; the pair needs {' or '.join(MODELS)}")
    configs = {m: given if m == given.model else dataclasses.replace(given, model=m, resume=None, out=out / f"same-{m}")
               for m in MODELS}
    same = {m: _summary(experiment.run(configs[m])) for m in MODELS}
    default = RECIPES[given.model]
    of = given.model if dataclasses.replace(given.recipe, epochs=default.epochs, note="") == \
        dataclasses.replace(default, note="") else None
    return given.recipe, of, same


def pair_accuracy(same: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pair's final accuracies: on validation when both held images out, else on the test set
    (with test-time augmentation when the shared recipe uses it)."""
    if all(s["val_accuracy"] is not None for s in same.values()):
        return dict(on="validation", history_key="val_accuracy", **{m: s["val_accuracy"] for m, s in same.items()})
    return dict(on="test", history_key="test_accuracy", **{m: s["test_accuracy"] for m, s in same.items()})


def run(config: Config) -> Result:
    out = new_run_dir("bn-study", config.out)
    recipe, recipe_of, same = same_recipe_runs(config, out)
    short = dataclasses.replace(recipe, epochs=config.sweep_epochs, tta=False)
    sweep = [sweep_run(config, m, at_lr(short, lr), out / f"sweep-{m}-lr{lr:g}")
             for lr in config.sweep_lrs for m in MODELS]
    result = Result(out=out, recipe=dataclasses.asdict(recipe), recipe_of=recipe_of, same_recipe=same, sweep=sweep)
    write_json(out / "study.json", dict(recipe_of=recipe_of, recipe=result.recipe, same_recipe=same, sweep=sweep,
                                        sweep_epochs=config.sweep_epochs, val_split=config.val_split,
                                        pair_from=None if config.pair_from is None else str(config.pair_from),
                                        pair_accuracy=pair_accuracy(same)))
    _figures(result, config)
    return result


def _figures(result: Result, config: Config) -> None:
    from cnnlab.plots.training import plot_comparison, plot_lr_sweep

    histories = {m: s["history"] for m, s in result.same_recipe.items()}
    whose = f"{result.recipe_of}'s recipe" if result.recipe_of else "one recipe"
    save_figure(plot_comparison(histories, "train_loss", title=f"training loss, both nets under {whose}"),
                result.out / "curves.png")
    acc = pair_accuracy(result.same_recipe)
    save_figure(plot_comparison(histories, acc["history_key"], title=f"{acc['on']} accuracy, same recipe"),
                result.out / "curves_val.png")
    save_figure(plot_lr_sweep(result.sweep, epochs=config.sweep_epochs), result.out / "sweep.png")


def present(result: Result) -> int:
    acc = pair_accuracy(result.same_recipe)
    for model, s in result.same_recipe.items():
        print(f"{model} (shared recipe, {result.recipe['epochs']} epochs): final train loss {s['train_loss']:.4f}, "
              f"{acc['on']} accuracy {acc[model]:.2%}" + (" (the run given, reused)" if s["cached"] else ""))
    for row in result.sweep:
        verdict = f"diverged ({row['reason']})" if row["diverged"] else f"validation {row['val_accuracy']:.2%}"
        print(f"  lr {row['lr']:<6g} {row['model']:<10} {verdict}")
    print(f"results: {result.out / 'study.json'}")
    return 0
