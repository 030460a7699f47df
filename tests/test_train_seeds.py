"""`cnnlab train-seeds` and the recipe as an option group: flags reach every seed's recipe."""

from __future__ import annotations

import pytest

from cnnlab.runs import read_json
from cnnlab.train.config import RECIPES


def test_train_seeds_applies_the_recipe_flags_to_every_seed(syn_root, tmp_path):
    from cnnlab.cli import main

    out = tmp_path / "s"
    assert main(["train-seeds", "--model", "hw-mish", "--seeds", "2", "--epochs", "1", "--batch-size", "40",
                 "--lr", "0.07", "--no-flip", "--data-root", str(syn_root), "--no-verify-md5", "--no-download",
                 "--precision", "fp32", "--out", str(out), "--quiet"]) == 0
    summary = read_json(out / "summary.json")
    assert summary["seeds"] == ["seed-0", "seed-1"] and set(summary["mean"]) >= {"test_accuracy", "train_seconds"}
    for seed in (0, 1):
        recipe = read_json(out / f"seed-{seed}" / "config.json")["recipe"]
        assert (recipe["epochs"], recipe["batch_size"], recipe["lr"], recipe["flip"]) == (1, 40, 0.07, False)
        assert recipe["momentum"] == RECIPES["hw-mish"].momentum  # a flag not given keeps the model's value
        assert read_json(out / f"seed-{seed}" / "config.json")["seed"] == seed


def test_a_recipe_flag_that_breaks_the_recipe_is_a_one_line_error(capsys):
    from cnnlab.cli import main

    assert main(["train", "--model", "hw-mish", "--momentum", "1.5"]) == 2
    assert "--momentum must be in [0, 1)" in capsys.readouterr().err


def test_the_study_trains_each_model_with_the_shared_recipe(tmp_path):
    study = pytest.importorskip("cnnlab.train.study")
    recipe = study.shared_recipe(study.Config(epochs=3))
    for model in study.MODELS:
        assert study.train_config(study.Config(epochs=3), model, recipe, tmp_path).recipe == recipe


def test_the_sweep_scales_muons_learning_rate_with_the_peak_rate():
    from dataclasses import replace

    from cnnlab.train.study import at_lr

    muon = replace(RECIPES["hw-mish"], optimizer="muon", lr=0.05, muon_lr=0.1)
    swept = at_lr(muon, 0.2)  # four times the peak rate: the filters' steps grow four times too
    assert (swept.lr, swept.muon_lr) == pytest.approx((0.2, 0.4))
    assert replace(swept, lr=muon.lr, muon_lr=muon.muon_lr) == muon  # nothing else changes
    sgd = at_lr(replace(muon, optimizer="sgd"), 0.2)
    assert (sgd.lr, sgd.muon_lr) == pytest.approx((0.2, 0.1))  # Muon's lr is unused and kept
