"""CUDA against the CPU: training, prediction, attacks and feature extraction give the same answers.

Every test here is marked ``gpu`` and skipped without a CUDA device (``pytest -m gpu`` runs them
alone). ``CNNLAB_TEST_DEVICE=cpu pytest -m gpu tests/test_cuda.py`` runs them with the CPU in the
GPU's place, a check of the tests themselves on machines without one.
"""

from __future__ import annotations

import os

import pytest
import torch
import test_train
from probe_helpers import make_folder, tiny_model

from cnnlab.attacks import PGD
from cnnlab.data.folders import load_image_folder
from cnnlab.images import load_image, pil_to_tensor
from cnnlab.models.pretrained import load_pretrained
from cnnlab.probe.extract import extract_features
from cnnlab.train import RECIPES, Config, checkpoint, run

DEVICE = os.environ.get("CNNLAB_TEST_DEVICE", "cuda")
SHUTTLE = 812

pytestmark = pytest.mark.gpu


def tiny(syn_root, out, device, **kw) -> Config:
    """test_train's tiny run as hw-mish-bn (BatchNorm, precise BN) without TTA, on ``device``."""
    return test_train.tiny(syn_root, out, **{"model": "hw-mish-bn", "lr": 0.1, "tta": False, "device": device, **kw})


def test_fp32_training_on_the_device_follows_the_cpu(syn_root, tmp_path):
    # same seed, same batches (the augmentation draws on a CPU generator), same initial weights:
    # the per-epoch losses agree up to TF32/cuDNN rounding
    cpu = run(tiny(syn_root, tmp_path / "cpu", "cpu"))
    dev = run(tiny(syn_root, tmp_path / "dev", DEVICE))
    for a, b in zip(cpu.history, dev.history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=5e-2)
    # model.pt holds CPU tensors: it loads anywhere with a plain torch.load
    state = torch.load(tmp_path / "dev" / checkpoint.WEIGHTS, weights_only=True)
    assert {t.device.type for t in state.values()} == {"cpu"}


def test_a_run_started_on_the_cpu_resumes_on_the_device(syn_root, tmp_path, monkeypatch):
    full = run(tiny(syn_root, tmp_path / "full", "cpu", epochs=3))
    test_train.crash_in_second_epoch(tiny(syn_root, tmp_path / "r", "cpu", epochs=3), monkeypatch)  # on the CPU
    # the checkpoint's tensors (optimizer state, generator state) are mapped to the device
    resumed = run(Config(resume=tmp_path / "r", quiet=True, device=DEVICE))
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [s["device"] for s in resumed.processes] == ["cpu", DEVICE]
    for a, b in zip(full.history, resumed.history):  # the same batches, so the same curve
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=2e-2)


@pytest.mark.parametrize("model", ["hw-mish", "improved"])
def test_auto_precision_trains_on_the_device(syn_root, tmp_path, model):
    # on CUDA "auto" is bf16 autocast + channels_last; each model trains with its own recipe's lr and
    # optimizer (Muon for the filters), improved with its whitening init
    result = run(tiny(syn_root, tmp_path / model, DEVICE, model=model, epochs=4, precision="auto",
                      lr=RECIPES[model].lr))
    if DEVICE.startswith("cuda"):
        assert result.precision == {"bf16": True, "channels_last": True}
    losses = [h["train_loss"] for h in result.history]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_prediction_on_the_device_matches_the_cpu(peppers_path):
    cpu = load_pretrained("mobilenet_v2")
    dev = load_pretrained("mobilenet_v2", device=DEVICE)
    x = cpu.preprocess(load_image(peppers_path))[None]  # 1, 3, 224, 224
    with torch.inference_mode():
        p_cpu = torch.softmax(cpu(x), 1)[0]
        p_dev = torch.softmax(dev(x.to(DEVICE)).float(), 1)[0].cpu()
    assert torch.equal(p_cpu.topk(3).indices, p_dev.topk(3).indices)
    torch.testing.assert_close(p_dev, p_cpu, atol=2e-3, rtol=0)


def test_pgd_on_the_device_keeps_the_budget_and_returns_home(peppers_path):
    model = load_pretrained("mobilenet_v2", device=DEVICE)
    x = pil_to_tensor(load_image(peppers_path))[None]  # 1, 3, 384, 512 on the CPU
    out = PGD(model, eps=2 / 255, steps=3, step_size=1 / 255, threshold=None,
              preprocess=model.preprocess_tensor)(x, torch.tensor([SHUTTLE]))
    adv = out.adversarial
    assert adv.device == x.device and adv.shape == x.shape  # back on the caller's device
    assert ((adv - x).abs() * 255).round().max() == 2  # exactly the budget, in grey levels
    with torch.inference_mode():
        p = [torch.softmax(model(model.preprocess_tensor(v.to(DEVICE))).float(), 1)[0, SHUTTLE].item()
             for v in (x, adv)]
    assert p[1] > 10 * p[0]  # the target class gained


def test_features_on_the_device_match_the_cpu(tmp_path):
    folder = load_image_folder(make_folder(tmp_path, per_class=3), seed=0)
    paths = list(folder.train.paths)
    cpu = extract_features(tiny_model(), paths, batch_size=4, workers=0, precision="fp32")
    dev = extract_features(tiny_model().to(DEVICE), paths, batch_size=4, workers=0, precision="fp32")
    assert dev.features.device.type == "cpu"
    torch.testing.assert_close(dev.features, cpu.features, atol=2e-3, rtol=0)
