"""Why a layer followed by BatchNorm needs no bias: the invariances, shown numerically.

For one neuron x_i = wᵀh_i + b over a mini-batch {h_1 … h_B}, BatchNorm (training mode) computes

    x̂_i = (x_i − μ_B) / sqrt(σ_B² + ε),   y_i = γ x̂_i + β.

* **Bias:** μ_B contains b, so b cancels in x_i − μ_B: the output is the same for every b and
  ∂L/∂b = Σ_i ∂L/∂x_i = 0 exactly.
* **Scale:** with w → αw (α ≠ 0), x_i − μ_B and σ_B scale by α and |α|, so x̂ is unchanged for
  α > 0 and flips sign for α < 0 — up to ε: x̂(αw) = sign(α) x̂(w) · sqrt((σ_B² + ε) / (σ_B² + ε/α²)).
  The gradient scales by 1/α: ∂L/∂w at αw is (1/α) ∂L/∂w at w.

The same holds channel by channel for a convolution followed by ``BatchNorm2d``. The command
measures all of it in float64 (so "identical" means equal to rounding error), then draws a
figure. The conclusion: build layers that feed BatchNorm with ``bias=False``; BatchNorm's β is
the bias and γ the scale; since the output ignores ‖w‖, weight decay only shrinks ‖w‖, which
raises the effective learning rate (a step of size η moves the direction of w by about η/‖w‖²).

Example: cnnlab batchnorm --batch-size 64 --alphas 0.01 0.5 2 -1
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.options import RunOptions, arg
from cnnlab.runs import save_figure, start_run, write_json

log = logging.getLogger(__name__)

CONCLUSION = [
    "Drop the bias of every layer followed by BatchNorm (nn.Conv2d(..., bias=False)): "
    "it cancels in x - mean, so it is a wasted parameter whose gradient is exactly zero.",
    "BatchNorm's own beta is the layer's bias and its gamma the layer's scale.",
    "The output does not depend on the scale of w, so weight decay only shrinks ||w||; "
    "the gradient grows as 1/||w||, so weight decay acts on the effective learning rate "
    "(about lr/||w||^2 for the direction of w), not as a constraint on the function.",
]


@dataclass(kw_only=True)
class Config(RunOptions):
    batch_size: int = arg(32, "mini-batch size B (BatchNorm statistics are over the batch)")
    features: int = arg(16, "input dimension of the single neuron (length of w and of each h_i)")
    biases: list[float] = arg(help="bias values b to compare (all must give the same output)",
                              default_factory=lambda: [-100.0, -1.0, 0.0, 0.5, 3.0, 1000.0])
    alphas: list[float] = arg(help="weight scales alpha (alpha > 0 keeps the output, alpha < 0 flips it)",
                              default_factory=lambda: [0.01, 0.1, 0.5, 2.0, 10.0, -1.0, -3.0])
    eps: float = arg(1e-5, "BatchNorm epsilon (PyTorch's default)")
    conv_channels: int = arg(8, "output channels of the convolution checked with BatchNorm2d")

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"--batch-size must be at least 2 (BatchNorm needs a batch), got {self.batch_size}")
        if self.features < 1 or self.conv_channels < 1:
            raise ValueError("--features and --conv-channels must be at least 1")
        if not self.biases:
            raise ValueError("give at least one --biases value")
        if not self.alphas or any(a == 0 for a in self.alphas):
            raise ValueError("--alphas must be non-empty and non-zero (alpha = 0 destroys the signal)")
        if not self.eps >= 0:
            raise ValueError(f"--eps must be >= 0, got {self.eps}")


@dataclass
class Result:
    neuron: dict[str, Any]
    conv: dict[str, Any]
    cifar: dict[str, Any] | None
    conclusion: list[str]
    run_dir: Path | None = None
    seconds: float = 0.0
    figure: Path | None = None
    curves: dict[str, Any] = field(default_factory=dict, repr=False)


# ----------------------------------------------------------------------------- the maths
def batchnorm_1d(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Training-mode BatchNorm of one neuron over the batch (γ = 1, β = 0): (x − μ_B)/sqrt(σ_B² + ε)."""
    mu = x.mean()
    var = x.var(unbiased=False)  # BatchNorm normalizes with the biased batch variance
    return (x - mu) / torch.sqrt(var + eps)


def eps_factor(var: float, alpha: float, eps: float) -> float:
    """Predicted ratio x̂(αw) / (sign(α) x̂(w)) = sqrt((σ² + ε) / (σ² + ε/α²))."""
    return math.sqrt((var + eps) / (var + eps / alpha**2))


def neuron_experiment(h: torch.Tensor, w: torch.Tensor, biases: list[float], alphas: list[float],
                      eps: float, upstream: torch.Tensor) -> dict[str, Any]:
    """All measurements for one neuron x = h @ w + b; ``upstream`` is ∂L/∂y (a fixed random vector)."""
    B, D = h.shape
    x0 = h @ w  # B
    y0 = batchnorm_1d(x0, eps)
    var = float(x0.var(unbiased=False))

    bias_rows = []
    for b in biases:
        bt = torch.tensor(float(b), dtype=h.dtype, requires_grad=True)
        x = h @ w + bt  # B
        y = batchnorm_1d(x, eps)
        (y * upstream).sum().backward()
        bias_rows.append({"b": b, "max_abs_diff": float((y.detach() - y0).abs().max()),
                          "pre_bn_shift": float((x.detach() - x0).abs().max()), "grad_b": float(bt.grad)})

    def grad_w_at(v: torch.Tensor, e: float) -> torch.Tensor:
        v = v.clone().requires_grad_(True)
        (batchnorm_1d(h @ v, e) * upstream).sum().backward()
        return v.grad.detach()

    grad_w, grad_w0 = grad_w_at(w, eps), grad_w_at(w, 0.0)
    alpha_rows = []
    for a in alphas:
        ya = batchnorm_1d(h @ (a * w), eps)
        sign = math.copysign(1.0, a)
        predicted = eps_factor(var, a, eps)
        ratio = ya / (sign * y0)  # B; equal to `predicted` for every i
        alpha_rows.append({
            "alpha": a, "sign": sign,
            # deviation from the exact invariance, caused only by ε
            "max_abs_dev": float((ya - sign * y0).abs().max()),
            "max_rel_dev": float((ratio - 1).abs().max()),
            "predicted_rel_dev": abs(predicted - 1),
            "max_abs_dev_eps0": float((batchnorm_1d(h @ (a * w), 0.0) - sign * batchnorm_1d(x0, 0.0)).abs().max()),
            # the gradient shrinks as 1/|α|: |α| ∂L/∂w(αw) = ∂L/∂w(w), exactly for ε = 0
            "grad_scaling_rel_err_eps0": float((abs(a) * grad_w_at(a * w, 0.0) - grad_w0).norm() / grad_w0.norm()),
            "grad_norm_ratio": float(grad_w_at(a * w, eps).norm() / grad_w.norm()),
            "y": ya.tolist(),
        })
    return {"batch_size": B, "features": D, "eps": eps, "batch_var": var,
            "grad_w_norm": float(grad_w.norm()), "bias": bias_rows, "alpha": alpha_rows,
            "max_abs_diff_over_biases": max(r["max_abs_diff"] for r in bias_rows),
            "max_abs_grad_b": max(abs(r["grad_b"]) for r in bias_rows),
            "x": x0.tolist(), "y": y0.tolist()}


def conv_experiment(images: torch.Tensor, channels: int, alphas: list[float], eps: float,
                    generator: torch.Generator) -> dict[str, Any]:
    """Conv2d(bias=True) → BatchNorm2d (training mode, random γ, β): bias and scale invariance."""
    B, C, H, W = images.shape
    conv = nn.Conv2d(C, channels, 3, padding=1, bias=True).to(images.dtype)
    bn = nn.BatchNorm2d(channels, eps=eps).to(images.dtype).train()
    with torch.no_grad():  # non-trivial affine parameters, so "β is the bias" is tested too
        bn.weight.copy_(torch.rand(channels, generator=generator, dtype=images.dtype) + 0.5)
        bn.bias.copy_(torch.randn(channels, generator=generator, dtype=images.dtype))
        conv.bias.copy_(torch.randn(channels, generator=generator, dtype=images.dtype))
    upstream = torch.randn(B, channels, H, W, generator=generator, dtype=images.dtype)

    def forward() -> torch.Tensor:
        return bn(conv(images))  # B, channels, H, W

    y0 = forward()
    (y0 * upstream).sum().backward()
    grad_bias = float(conv.bias.grad.abs().max())
    grad_weight = float(conv.weight.grad.norm())
    y0 = y0.detach()
    beta = bn.bias.detach().view(1, -1, 1, 1)

    with torch.no_grad():
        conv.bias.add_(torch.randn(channels, generator=generator, dtype=images.dtype) * 100)
        y_new_bias = forward()
        conv.bias.zero_()  # the bias=False layer
        y_no_bias = forward()
    weight = conv.weight.detach().clone()
    with torch.no_grad():
        var_c = conv(images).var(dim=(0, 2, 3), unbiased=False)  # channels; the bias does not change it
    scale_rows = []
    for a in alphas:
        with torch.no_grad():
            conv.weight.copy_(a * weight)
            ya = forward()
            conv.weight.copy_(weight)
        sign = math.copysign(1.0, a)
        factor = torch.sqrt((var_c + eps) / (var_c + eps / a**2)).view(1, -1, 1, 1)  # 1, channels, 1, 1
        scale_rows.append({"alpha": a, "sign": sign,
                           # y − β flips with sign(α): (y(αw) − β) = sign(α)(y(w) − β), up to ε ...
                           "max_abs_dev": float(((ya - beta) - sign * (y0 - beta)).abs().max()),
                           # ... and the ε term is exactly the predicted per-channel factor
                           "max_abs_dev_after_eps_correction": float(
                               ((ya - beta) - sign * factor * (y0 - beta)).abs().max()),
                           "max_predicted_rel_dev": float((factor - 1).abs().max())})
    return {"in_channels": C, "out_channels": channels, "kernel": 3, "image_size": [H, W], "batch_size": B,
            "eps": eps, "max_abs_diff_new_bias": float((y_new_bias - y0).abs().max()),
            "max_abs_diff_no_bias": float((y_no_bias - y0).abs().max()),
            "max_abs_grad_bias": grad_bias, "grad_weight_norm": grad_weight,
            "channel_var_min": float(var_c.min()), "channel_var_max": float(var_c.max()), "alpha": scale_rows}


def cifar_bias_check(model_name: str = "hw-mish-bn") -> dict[str, Any] | None:
    """Does the CIFAR-10 BatchNorm network follow the rule? ``None`` if that registry is absent."""
    try:
        from cnnlab.models import cifar
    except ImportError:
        return None
    try:
        net = cifar.build(model_name)
    except (ValueError, KeyError):
        return None
    leaves = [m for m in net.modules() if not list(m.children())]  # leaf modules in definition order
    convs_before_bn = with_bias = 0
    for layer, nxt in zip(leaves, leaves[1:]):
        if isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(nxt, (nn.BatchNorm1d, nn.BatchNorm2d)):
            convs_before_bn += 1
            with_bias += layer.bias is not None
    return {"model": model_name, "layers_before_batchnorm": convs_before_bn, "with_bias": with_bias}


# ----------------------------------------------------------------------------- the verb
def run(config: Config) -> Result:
    run_dir = start_run("batchnorm", config, device="cpu").dir
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(config.seed)
    dt = torch.float64  # so that "identical" means "equal to rounding error"

    B, D = config.batch_size, config.features
    h = torch.randn(B, D, generator=g, dtype=dt) * 2 + 1  # not centred: the mean matters
    w = torch.randn(D, generator=g, dtype=dt)
    upstream = torch.randn(B, generator=g, dtype=dt)
    neuron = neuron_experiment(h, w, config.biases, config.alphas, config.eps, upstream)

    images = torch.rand(min(B, 8), 3, 16, 16, generator=g, dtype=dt)  # B, 3, 16, 16
    conv = conv_experiment(images, config.conv_channels, config.alphas, config.eps, g)
    cifar = cifar_bias_check()

    from cnnlab.plots.batchnorm import invariance_figure

    curves = sweep_curves(h, w, config.eps)
    fig = invariance_figure(neuron, curves)
    figure = save_figure(fig, run_dir / "batchnorm.png")
    result = Result(neuron, conv, cifar, CONCLUSION, run_dir, time.perf_counter() - t0, figure, curves)
    write_json(run_dir / "batchnorm.json", {
        "neuron": neuron, "conv": conv, "cifar": cifar, "conclusion": CONCLUSION,
        "curves": curves, "dtype": "float64", "figure": figure.name, "seconds": result.seconds})
    return result


def sweep_curves(h: torch.Tensor, w: torch.Tensor, eps: float, n: int = 41) -> dict[str, Any]:
    """Measured and predicted ε-deviation over a log-spaced range of |α| (for the figure)."""
    x0 = h @ w
    var = float(x0.var(unbiased=False))
    y0 = batchnorm_1d(x0, eps)
    alphas = torch.logspace(-4, 2, n, dtype=torch.float64).tolist()
    measured = [float((batchnorm_1d(h @ (a * w), eps) - y0).abs().max() / y0.abs().max()) for a in alphas]
    predicted = [abs(eps_factor(var, a, eps) - 1) for a in alphas]
    return {"alphas": alphas, "measured_rel_dev": measured, "predicted_rel_dev": predicted}


def present(result: Result) -> int:
    n, c = result.neuron, result.conv
    print(f"single neuron, B={n['batch_size']}, D={n['features']}, eps={n['eps']:g}, float64")
    print("  bias b      max|y(b) - y(0)|   max|x(b) - x(0)|   dL/db")
    for r in n["bias"]:
        print(f"  {r['b']:<10g}  {r['max_abs_diff']:<17.3e}  {r['pre_bn_shift']:<17.3e}  {r['grad_b']:.3e}")
    print(f"  (for comparison |dL/dw| = {n['grad_w_norm']:.3e})")
    print("  alpha       max|y(aw) - sign(a) y(w)|   rel.: measured  predicted (eps)   with eps=0   |a| grad(aw) vs grad(w)")
    for r in n["alpha"]:
        print(f"  {r['alpha']:<10g}  {r['max_abs_dev']:<26.3e}  {r['max_rel_dev']:<15.3e} {r['predicted_rel_dev']:<17.3e}"
              f" {r['max_abs_dev_eps0']:<12.3e} {r['grad_scaling_rel_err_eps0']:.1e}")
    print(f"conv {c['in_channels']}->{c['out_channels']} 3x3 + BatchNorm2d (training mode):")
    print(f"  new bias: max|dy| = {c['max_abs_diff_new_bias']:.3e};  bias=False: max|dy| = {c['max_abs_diff_no_bias']:.3e};"
          f"  max|dL/dbias| = {c['max_abs_grad_bias']:.3e} (|dL/dW| = {c['grad_weight_norm']:.3e})")
    for r in c["alpha"]:
        print(f"  alpha {r['alpha']:<8g} max|(y(aW) - beta) - sign(a)(y(W) - beta)| = {r['max_abs_dev']:.3e}"
              f"  (eps effect predicted up to {r['max_predicted_rel_dev']:.2e} rel.;"
              f" after that correction {r['max_abs_dev_after_eps_correction']:.1e})")
    if result.cifar:
        k = result.cifar
        print(f"{k['model']}: {k['layers_before_batchnorm']} layers feed BatchNorm, {k['with_bias']} of them with a bias")
    print("conclusion:")
    for line in result.conclusion:
        print(f"  - {line}")
    print(f"results: {result.run_dir}")
    return 0
