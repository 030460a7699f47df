"""`cnnlab train` / `compare` on a tiny synthetic CIFAR-format set: learning, files, resume, NaN, figures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from cnnlab import precision
from cnnlab.errors import CnnlabError
from cnnlab.precision import Precision
from cnnlab.runs import read_json
from cnnlab.train import Config, run
from cnnlab.train import config as train_config
from cnnlab.train import experiment, loop


def tiny(syn_root, out, **kw) -> Config:
    base = dict(model="hw-mish", epochs=2, batch_size=20, lr=0.05, data_root=syn_root, verify_md5=False,
                download=False, out=out, quiet=True, precision="fp32")
    base.update(kw)
    return Config.from_flat(**base)


def crash_in_second_epoch(config: Config, monkeypatch) -> None:
    """Run ``config`` until it dies in the middle of its second epoch, after epoch 1's checkpoint."""
    real_epoch, calls = experiment.train_epoch, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # dies in the middle of the second epoch
        return real_epoch(*args, **kwargs)

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(experiment, "train_epoch", crashing)
        run(config)


def test_training_lowers_the_loss_and_writes_the_run_folder(syn_root, tmp_path):
    result = run(tiny(syn_root, tmp_path / "a", epochs=4, model="hw-mish-bn", lr=0.1))
    losses = [h["train_loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < 0.8 * losses[0]
    for name in ("config.json", "env.json", "history.json", "history.csv", "result.json", "loss.png",
                 "filters.png", "checkpoint.pt", "model.pt"):
        assert (tmp_path / "a" / name).is_file(), name
    saved = read_json(tmp_path / "a" / "result.json")
    assert saved["parameters"] == result.parameters == 246_346
    assert saved["init_scheme"].startswith("Kaiming") and "SGD" in saved["optimizer"]
    assert saved["recipe"]["lr"] == 0.1 and saved["recipe"]["label_smoothing"] == 0.1
    assert 0 <= saved["test_accuracy"] <= 1 and saved["wall_seconds"] > 0
    csv_lines = (tmp_path / "a" / "history.csv").read_text().splitlines()
    no_val = [f for f in experiment.HISTORY_FIELDS if not f.startswith("val_")]  # no --val-split: no such columns
    assert csv_lines[0].split(",") == no_val and len(csv_lines) == 5
    config = read_json(tmp_path / "a" / "config.json")
    assert config["model"] == "hw-mish-bn" and config["recipe"]["batch_size"] == 20
    # hw-mish-bn's recipe ends with precise BatchNorm statistics: the saved weights carry them,
    # the last epoch's checkpoint still has the running averages of training
    assert config["recipe"]["precise_bn"] and saved["precise_bn"]["images"] == 80
    final = torch.load(tmp_path / "a" / "model.pt", weights_only=True)
    last = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.allclose(final["features.1.running_mean"], last["features.1.running_mean"])
    assert torch.equal(final["features.0.weight"], last["features.0.weight"])
    # same options, same folder: the finished run is reused, not retrained
    again = run(tiny(syn_root, tmp_path / "a", epochs=4, model="hw-mish-bn", lr=0.1))
    assert again.cached and again.test_accuracy == result.test_accuracy


def test_resume_after_a_crash_matches_an_uninterrupted_run(syn_root, tmp_path, monkeypatch):
    full = run(tiny(syn_root, tmp_path / "full", deterministic=True))
    crash_in_second_epoch(tiny(syn_root, tmp_path / "crash", deterministic=True), monkeypatch)
    assert read_json(tmp_path / "crash" / "history.json")[-1]["epoch"] == 1
    resumed = run(Config(resume=tmp_path / "crash", quiet=True))
    assert [h["epoch"] for h in resumed.history] == [1, 2]
    a = torch.load(tmp_path / "full" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "crash" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.test_accuracy == full.test_accuracy


def test_alternate_flip_mirrors_every_image_once_per_pair_of_epochs(syn_root, tmp_path, monkeypatch):
    seen: dict[bytes, list[bool]] = {}  # image bytes -> mirrored in epoch 1, 2, ...
    real = loop.augment

    def spy(images, **kw):
        out = real(images, **kw)
        for x, y in zip(images, out):
            assert torch.equal(y, x) or torch.equal(y, x.flip(-1))
            seen.setdefault(x.numpy().tobytes(), []).append(not torch.equal(y, x))
        return out

    monkeypatch.setattr(loop, "augment", spy)
    config = tiny(syn_root, tmp_path / "af", epochs=4, batch_size=40, translate=0, alternate_flip=True)
    assert config.recipe.alternate_flip and not tiny(syn_root, None).recipe.alternate_flip
    run(config)
    assert len(seen) == 80 and all(len(f) == 4 for f in seen.values())  # 80 images, 2 steps of 40
    assert all(f[0] != f[1] and f[0] == f[2] and f[1] == f[3] for f in seen.values())
    assert 0 < sum(f[0] for f in seen.values()) < 80  # a random half, not all or none


def test_a_run_resumed_on_another_kind_of_machine_says_so(syn_root, tmp_path, monkeypatch, caplog):
    # started on a CPU without native bf16 (fp32), resumed on one with it (bf16 autocast)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    crash_in_second_epoch(tiny(syn_root, tmp_path / "r", precision="auto"), monkeypatch)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    with caplog.at_level("WARNING", logger="cnnlab.train.experiment"):
        resumed = run(Config(resume=tmp_path / "r", quiet=True))
    assert "epochs 1-1 ran with fp32 on cpu" in caplog.text and "the rest runs with bf16 autocast" in caplog.text
    first, second = resumed.processes
    assert (first["first_epoch"], second["first_epoch"]) == (1, 2)
    assert first["precision"]["bf16"] is False and second["precision"]["bf16"] is True
    assert read_json(tmp_path / "r" / "result.json")["processes"] == resumed.processes


def test_precise_bn_statistics_are_the_averages_over_the_whole_set():
    from cnnlab.data.cifar10 import Split
    from cnnlab.models.cifar import build

    torch.manual_seed(0)
    model = build("hw-mish-bn").train()
    data = Split(torch.randint(0, 256, (60, 3, 32, 32), dtype=torch.uint8), torch.zeros(60, dtype=torch.int64))
    bn = model.features[1]
    momentum = bn.momentum
    model.eval()
    assert loop.precise_bn(model, data, precision=Precision(False, False), batch_size=20) == 3
    assert not model.training and bn.momentum == momentum  # mode and momentum restored
    with torch.no_grad():  # oracle: the first conv's output over all 60 images at once
        x = model.features[0](model.normalize(data.images.float() / 255))  # 60, 64, 32, 32
    assert torch.allclose(bn.running_mean, x.mean((0, 2, 3)), atol=1e-5)
    assert torch.allclose(bn.running_var, x.var((0, 2, 3)), rtol=0.02)  # mean of 3 batch variances
    assert bn.num_batches_tracked == 3
    assert loop.precise_bn(build("hw-mish"), data, precision=Precision(False, False)) == 0  # no BN


def test_nan_loss_stops_with_a_clear_message(syn_root, tmp_path):
    with pytest.raises(CnnlabError, match="NaN|nan|inf"):
        run(tiny(syn_root, tmp_path / "nan", lr=1e12, epochs=2))
    assert not (tmp_path / "nan" / "result.json").exists()


def test_precision_auto_and_recipe_defaults():
    r = Config(model="improved").recipe
    assert (r.epochs, r.batch_size, r.tta, r.lookahead, r.alternate_flip) == (8, 2000, True, False, True)
    assert {r.optimizer for r in train_config.RECIPES.values()} == {"muon"}
    assert not Config.from_flat(model="improved", alternate_flip=False).recipe.alternate_flip
    assert Config(model="hw-mish-bn").recipe.precise_bn and not Config(model="hw-mish").recipe.precise_bn
    assert not Config(model="hw-mish-bn", recipe={"precise_bn": False}).recipe.precise_bn
    assert Config.from_flat(model="hw-mish", lr=0.3).recipe.lr == 0.3
    assert Config(model="hw-mish", recipe=train_config.RECIPES["improved"]).recipe.batch_size == 2000
    assert precision.for_training("fp32", "hw-mish", "cpu") == Precision(False, False)
    with pytest.raises(ValueError):
        Config.from_flat(model="hw-mish", epochs=0)
    with pytest.raises(ValueError, match="muon-lr"):
        Config.from_flat(model="hw-mish", optimizer="muon", muon_lr=0)
    with pytest.raises(TypeError):
        Config.from_flat(model="hw-mish", epoch=3)  # a misspelt option is an error, not ignored


def test_training_runs_nchw_and_evaluation_channels_last_with_the_same_numbers(syn_root, tmp_path, monkeypatch):
    """hw-mish trains in NCHW (its 11x11 conv's backward is slow in channels_last); the forward-only
    passes run channels_last, which changes the speed, not the result."""
    from cnnlab.data.cifar10 import Split
    from cnnlab.distributed import Context

    seen = {True: set(), False: set()}  # model.training -> was the first conv's input channels_last?
    real_build = experiment.build

    def watched(name):
        model = real_build(name)
        model.first_conv.register_forward_pre_hook(lambda m, args: seen[m.training].add(args[0].stride(1) == 1))
        return model

    monkeypatch.setattr(experiment, "build", watched)
    run(tiny(syn_root, tmp_path / "a", epochs=1))
    assert seen == {True: {False}, False: {True}}
    assert Precision(True, False).for_inference() == Precision(True, True)
    torch.manual_seed(0)
    model = real_build("hw-mish-bn").eval()
    data = Split(torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8), torch.randint(0, 10, (50,)))
    ctx = Context()
    nchw = loop.evaluate(model, data, ctx=ctx, precision=precision.FP32, tta=True)
    assert loop.evaluate(model, data, ctx=ctx, precision=precision.FP32.for_inference(), tta=True) == \
        pytest.approx(nchw, rel=1e-5)


def test_precision_auto_follows_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.for_training("auto", "hw-mish", "cpu") == Precision(True, False)
    assert precision.for_training("auto", "improved", "cpu") == Precision(True, True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)  # AVX2 only: bf16 is emulated, ~10x slower
    assert precision.for_training("auto", "hw-mish-bn", "cpu") == Precision(False, False)
    assert precision.for_training("auto", "improved", "cpu") == Precision(False, True)
    assert precision.for_training("auto", "improved", "cuda") == Precision(True, True)
    with caplog.at_level("WARNING", logger="cnnlab.precision"):
        assert precision.for_training("bf16", "hw-mish", "cpu").bf16  # honoured, with a warning
    assert "AVX512-BF16" in caplog.text
    assert not precision.bf16_native("cpu")  # training and extraction ask the same check


def test_run_key_counts_resolved_hyper_parameters():
    from cnnlab.train.config import run_key

    default = run_key(Config(model="improved"))
    assert run_key(Config.from_flat(model="improved", epochs=8, lr=1.5)) == default  # the defaults, given explicitly
    assert run_key(Config.from_flat(model="improved", epochs=10)) != default
    assert run_key(Config(model="improved", seed=1)) != default
    assert run_key(Config(model="improved", out=Path("elsewhere"), threads=1, tune_heap=False)) == default
    assert "note" not in default["recipe"]  # rewording a recipe's description keeps its runs valid
    assert default["recipe_version"] == train_config.RECIPE_VERSION


def test_run_key_changes_with_every_recipe_field_and_the_recipe_version(monkeypatch):
    from cnnlab.train.config import RECIPE_FIELDS, Recipe, run_key

    base = Config(model="improved")
    default = run_key(base)
    for name in RECIPE_FIELDS:
        value = getattr(base.recipe, name)
        if name == "note":
            changed = "reworded"
        elif name == "optimizer":
            changed = {"optimizer": "muon", "muon_lr": 0.1}
        elif isinstance(value, bool):
            changed = not value
        else:
            changed = (value + 0.5) % 1 if name in ("momentum", "muon_momentum", "label_smoothing") else value + 1
        changes = changed if isinstance(changed, dict) else {name: changed}
        key = run_key(Config(model="improved", recipe=changes))
        assert (key == default) == (name == "note"), name
    assert isinstance(base.recipe, Recipe)
    monkeypatch.setattr(train_config, "RECIPE_VERSION", train_config.RECIPE_VERSION + 1)
    assert run_key(base) != default


def test_a_folder_with_another_recipe_version_is_not_reused(syn_root, tmp_path, monkeypatch):
    run(tiny(syn_root, tmp_path / "v", epochs=1))
    assert read_json(tmp_path / "v" / "config.json")["run_key"]["recipe_version"] == train_config.RECIPE_VERSION
    assert run(tiny(syn_root, tmp_path / "v", epochs=1)).cached
    monkeypatch.setattr(train_config, "RECIPE_VERSION", train_config.RECIPE_VERSION + 1)
    with pytest.raises(CnnlabError, match="different options"):
        run(tiny(syn_root, tmp_path / "v", epochs=1))


def test_lr_schedule_warms_up_then_decays():
    r = Config.from_flat(model="improved", warmup=0.23, lr_start=0.2, lr_end=0.07).recipe
    f = [loop.lr_factor(s, 100, r) for s in range(100)]
    assert f[0] == pytest.approx(r.lr_start) and max(f) == pytest.approx(1.0)
    peak = f.index(max(f))
    assert peak == 23 and all(a <= b for a, b in zip(f[:peak], f[1:peak + 1]))
    assert all(a >= b for a, b in zip(f[peak:], f[peak + 1:])) and f[-1] > r.lr_end
    # improved's default: no warm-up, straight from the peak down to lr_end = 0
    d = Config(model="improved").recipe
    g = [loop.lr_factor(s, 100, d) for s in range(100)]
    assert g[0] == 1.0 and all(a > b for a, b in zip(g, g[1:])) and g[-1] == pytest.approx(0.01)  # step 99 of 100


def test_filter_grid_is_4x16_and_each_filter_in_unit_range():
    from cnnlab.plots.training import filter_grid, plot_filters

    w = torch.randn(64, 3, 11, 11) * 5 + 3
    grid = filter_grid(w, scale=4, gap=1)
    tile = 11 * 4
    assert grid.shape == (4 * (tile + 1) - 1, 16 * (tile + 1) - 1, 3)
    assert grid.min() >= 0 and grid.max() <= 1
    for r in range(4):
        for c in range(16):
            t = grid[r * (tile + 1):r * (tile + 1) + tile, c * (tile + 1):c * (tile + 1) + tile]
            assert t.min() == pytest.approx(0) and t.max() == pytest.approx(1)  # stretched on its own
            assert (t[:4, :4] == t[0, 0]).all()  # nearest-neighbour enlargement
    assert plot_filters(w).axes


def test_compare_and_cli_smoke(syn_root, tmp_path):
    from cnnlab.cli import main

    args = ["--data-root", str(syn_root), "--no-verify-md5", "--no-download", "--epochs", "1", "--batch-size", "20",
            "--precision", "fp32", "--quiet"]
    assert main(["train", "--model", "hw-mish", "--out", str(tmp_path / "m"), *args]) == 0
    assert main(["train", "--model", "hw-mish-bn", "--out", str(tmp_path / "b"), *args]) == 0
    assert main(["compare", str(tmp_path / "m"), str(tmp_path / "b"), "--out", str(tmp_path / "c")]) == 0
    saved = read_json(tmp_path / "c" / "compare.json")
    assert set(saved["histories"]) == {"hw-mish", "hw-mish-bn"} and (tmp_path / "c" / "compare.png").is_file()
    assert main(["compare", str(tmp_path)]) == 2  # not a run folder: one-line error
