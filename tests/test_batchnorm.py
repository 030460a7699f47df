"""The BatchNorm invariances: each claim of `cnnlab batchnorm` is asserted on its own numbers."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

import cnnlab.batchnorm as bn
from cnnlab.cli import main


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp("bn")
    return bn.run(bn.Config(out=out, batch_size=24, features=8, biases=[-50.0, 0.0, 7.0, 1000.0],
                            alphas=[0.01, 0.5, 3.0, -1.0, -4.0]))


def test_batchnorm_1d_matches_torch_batch_norm():
    """Oracle: our one-neuron BatchNorm equals torch's training-mode batch_norm."""
    x = torch.randn(40, dtype=torch.float64) * 3 + 5
    ours = bn.batchnorm_1d(x, 1e-5)
    ref = F.batch_norm(x.view(40, 1), None, None, training=True, eps=1e-5).view(40)
    assert torch.allclose(ours, ref, atol=1e-12)


def test_bias_cancels_and_its_gradient_is_zero(result):
    n = result.neuron
    scale = max(abs(v) for v in n["y"])
    for row in n["bias"]:
        # the bias really was applied before BatchNorm (a no-op would fail here) ...
        assert row["pre_bn_shift"] == pytest.approx(abs(row["b"]), rel=1e-9, abs=1e-9)
        # ... and cancelled after it, with a zero gradient (float64 rounding only)
        assert row["max_abs_diff"] <= 1e-12 * max(1.0, abs(row["b"])) * scale
        assert abs(row["grad_b"]) <= 1e-12 * max(1.0, abs(row["b"])) * n["grad_w_norm"]
    assert n["grad_w_norm"] > 1e-3  # the weights, unlike the bias, do get a gradient


def test_scale_invariance_up_to_eps_and_sign_flip(result):
    n = result.neuron
    y = torch.tensor(n["y"])
    for row in n["alpha"]:
        ya = torch.tensor(row["y"])
        sign = math.copysign(1.0, row["alpha"])
        # α < 0 flips the output, α > 0 keeps it (up to ε)
        assert torch.allclose(ya, sign * y, atol=1e-2)
        if row["alpha"] < 0:
            assert torch.corrcoef(torch.stack([ya, y]))[0, 1] < -0.999
        # with ε = 0 the invariance is exact
        assert row["max_abs_dev_eps0"] < 1e-12
        # with ε the deviation is exactly the predicted factor sqrt((σ²+ε)/(σ²+ε/α²)) − 1
        assert row["max_rel_dev"] == pytest.approx(row["predicted_rel_dev"], rel=1e-6, abs=1e-13)
        # the gradient scales as 1/|α| (why weight decay changes the effective learning rate)
        assert row["grad_scaling_rel_err_eps0"] < 1e-12
        assert row["grad_norm_ratio"] == pytest.approx(1 / abs(row["alpha"]), rel=1e-2)
    tiny = next(r for r in n["alpha"] if r["alpha"] == 0.01)
    assert tiny["predicted_rel_dev"] > 1e-6  # ε matters when α²σ² approaches ε: quantified, not hidden


def test_conv_then_batchnorm2d(result):
    c = result.conv
    assert c["max_abs_diff_new_bias"] < 1e-9
    assert c["max_abs_diff_no_bias"] < 1e-9
    assert c["max_abs_grad_bias"] < 1e-9 * c["grad_weight_norm"]
    assert c["grad_weight_norm"] > 1e-3
    for row in c["alpha"]:
        assert row["max_abs_dev_after_eps_correction"] < 1e-9
    assert next(r for r in c["alpha"] if r["alpha"] == -1.0)["max_abs_dev"] < 1e-9  # exact sign flip


def test_eps_factor_formula():
    assert bn.eps_factor(2.0, 1.0, 1e-5) == 1.0
    assert bn.eps_factor(2.0, -1.0, 1e-5) == 1.0
    assert bn.eps_factor(1e-6, 0.1, 1e-5) < 0.5  # α²σ² ≪ ε: the ε term dominates
    assert bn.eps_factor(2.0, 5.0, 0.0) == 1.0


def test_files_figure_and_cli(tmp_path, capsys):
    assert main(["batchnorm", "--out", str(tmp_path), "--batch-size", "8", "--quiet"]) == 0
    data = json.loads((tmp_path / "batchnorm.json").read_text())
    assert {"neuron", "conv", "conclusion", "curves"} <= data.keys()
    assert (tmp_path / "batchnorm.png").stat().st_size > 10_000
    assert (tmp_path / "config.json").exists() and (tmp_path / "env.json").exists()
    out = capsys.readouterr().out
    assert "bias=False" in out and "effective learning rate" in out


def test_figure_is_pure(result):
    from matplotlib.figure import Figure

    from cnnlab.plots.batchnorm import invariance_figure

    fig = invariance_figure(result.neuron, result.curves)
    assert isinstance(fig, Figure) and len(fig.axes) == 3


@pytest.mark.parametrize("kwargs", [{"batch_size": 1}, {"alphas": [0.0]}, {"biases": []}, {"eps": -1.0}])
def test_config_rejects_impossible_values(kwargs):
    with pytest.raises(ValueError):
        bn.Config(**kwargs)
