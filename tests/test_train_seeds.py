"""`cnnlab train-seeds` and the recipe as an option group: flags reach every seed's recipe."""

from __future__ import annotations

from pathlib import Path

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


def test_pair_from_reuses_the_run_given_and_trains_the_other_net_with_its_exact_options(syn_root, tmp_path):
    from cnnlab.cli import main
    from cnnlab.train import study

    given = tmp_path / "plain"
    assert main(["train", "--model", "hw-mish", "--epochs", "2", "--batch-size", "40", "--lr", "0.07", "--seed", "3",
                 "--data-root", str(syn_root), "--no-verify-md5", "--no-download", "--precision", "fp32",
                 "--limit-test", "30", "--out", str(given), "--quiet"]) == 0
    before = (given / "result.json").read_bytes()
    result = study.run(study.Config(pair_from=given, sweep_lrs=(0.07,), sweep_epochs=1, val_split=20, seed=3,
                                    data_root=syn_root, verify_md5=False, precision="fp32", quiet=True,
                                    out=tmp_path / "study"))
    plain, bn = result.same_recipe["hw-mish"], result.same_recipe["hw-mish-bn"]
    assert plain["cached"] and plain["run_dir"] == str(given) and (given / "result.json").read_bytes() == before
    assert not bn["cached"] and len(bn["history"]) == 2
    key = {name: read_json(Path(run) / "config.json")["run_key"] for name, run in
           (("plain", given), ("bn", bn["run_dir"]))}
    assert key["bn"] == {**key["plain"], "model": "hw-mish-bn"}  # only the model differs
    assert result.recipe_of is None  # a recipe of its own, not hw-mish's default
    data = read_json(result.out / "study.json")
    assert data["pair_accuracy"]["on"] == "test" and data["pair_accuracy"]["hw-mish"] == plain["test_accuracy"]
    assert [(r["model"], r["lr"]) for r in data["sweep"]] == [("hw-mish", 0.07), ("hw-mish-bn", 0.07)]
    with pytest.raises(ValueError, match="--epochs does not apply"):
        study.Config(pair_from=given, epochs=3)


def test_pair_from_a_folder_that_is_no_run_or_an_improved_run_is_a_clear_error(tmp_path):
    from cnnlab.errors import CnnlabError
    from cnnlab.runs import write_json
    from cnnlab.train import study

    with pytest.raises(CnnlabError, match="not a cnnlab train run folder"):
        study.run(study.Config(pair_from=tmp_path / "nothing", out=tmp_path / "s1"))
    write_json(tmp_path / "imp" / "config.json", {"model": "improved"})
    with pytest.raises(CnnlabError, match="a run of improved; the pair needs hw-mish or hw-mish-bn"):
        study.run(study.Config(pair_from=tmp_path / "imp", out=tmp_path / "s2"))


def test_the_sweep_scales_muons_learning_rate_with_the_peak_rate():
    from dataclasses import replace

    from cnnlab.train.study import at_lr

    muon = replace(RECIPES["hw-mish"], optimizer="muon", lr=0.05, muon_lr=0.1)
    swept = at_lr(muon, 0.2)  # four times the peak rate: the filters' steps grow four times too
    assert (swept.lr, swept.muon_lr) == pytest.approx((0.2, 0.4))
    assert replace(swept, lr=muon.lr, muon_lr=muon.muon_lr) == muon  # nothing else changes
    same = replace(muon, muon_lr=0.05)
    assert [at_lr(same, lr).muon_lr for lr in (0.05, 0.2, 0.4)] == [0.05, 0.2, 0.4]  # exactly, as written
    sgd = at_lr(replace(muon, optimizer="sgd"), 0.2)
    assert (sgd.lr, sgd.muon_lr) == pytest.approx((0.2, 0.1))  # Muon's lr is unused and kept
