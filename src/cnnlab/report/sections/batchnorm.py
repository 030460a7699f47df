"""Section: why layers followed by BatchNorm need no bias (``cnnlab batchnorm``).

Shown by ``templates/sections/batchnorm.html.j2``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cnnlab.report.section import Num, SectionContext, SectionData
from cnnlab.runs import read_json

ID = "batchnorm"
TITLE = "BatchNorm: the bias cancels, the scale does not matter"
SOURCES = ("cnnlab.batchnorm", "cnnlab.plots.batchnorm")

Reader = Callable[..., Num]


def collect(ctx: SectionContext) -> SectionData:
    import cnnlab.batchnorm as bn

    cfg = dict(ctx.profile.batchnorm)
    run_dir = ctx.cached("batchnorm", cfg, lambda d: bn.run(bn.Config(out=d, **cfg, **ctx.common)))
    src = run_dir / "batchnorm.json"
    data = read_json(src)
    N = ctx.reader(src, data)
    neuron = _neuron(N, data["neuron"])
    figure = ctx.figure(run_dir / "batchnorm.png", wide=True)
    return SectionData(**neuron, figure=figure, **_conv(N, data["conv"]), cifar=_cifar(N, data.get("cifar")),
                       conclusion=data["conclusion"])


def _neuron(N: Reader, n: dict) -> dict[str, Any]:
    """One neuron: the bias cancels (output and gradient), the scale matters only through ε."""
    alphas = n["alpha"]

    def alpha(i: int, key: str, name: str, spec: str) -> Num:
        return N(name, ["neuron", "alpha", i, key], spec)

    kept = [alpha(i, "alpha", f"alpha{i}", "g") for i, r in enumerate(alphas) if r["alpha"] > 0]
    flipped = [alpha(i, "alpha", f"alpha{i}", "g") for i, r in enumerate(alphas) if r["alpha"] < 0]
    i_small = min(range(len(alphas)), key=lambda i: abs(alphas[i]["alpha"]))
    i_big = max(range(len(alphas)), key=lambda i: abs(alphas[i]["alpha"]))
    i_shift = max(range(len(n["bias"])), key=lambda i: abs(n["bias"][i]["b"]))
    y_scale = max(abs(v) for v in n["y"])
    return dict(
        kept=kept, flipped=flipped,
        B=N("B", ["neuron", "batch_size"], "int"), D=N("D", ["neuron", "features"], "int"),
        biases=[N(f"b{i}", ["neuron", "bias", i, "b"], "g") for i in range(len(n["bias"]))],
        max_dy_bias=N("max_dy_bias", ["neuron", "max_abs_diff_over_biases"], ".1e"),
        max_shift=N("max_shift", ["neuron", "bias", i_shift, "pre_bn_shift"], "g"),
        biases_ok=n["max_abs_diff_over_biases"] <= 1e-9 * y_scale,
        max_grad_b=N("max_grad_b", ["neuron", "max_abs_grad_b"], ".1e"),
        grad_w=N("grad_w", ["neuron", "grad_w_norm"], ".3g"),
        grad_ok=n["max_abs_grad_b"] <= 1e-9 * n["grad_w_norm"],
        var=N("var", ["neuron", "batch_var"], ".4g"), eps=N("eps", ["neuron", "eps"], "g"),
        a_small=alpha(i_small, "alpha", "a_small", "g"),
        pred_small=alpha(i_small, "predicted_rel_dev", "pred_small", ".3e"),
        meas_small=alpha(i_small, "max_rel_dev", "meas_small", ".3e"),
        a_big=alpha(i_big, "alpha", "a_big", "g"),
        pred_big=alpha(i_big, "predicted_rel_dev", "pred_big", ".3e"),
        meas_big=alpha(i_big, "max_rel_dev", "meas_big", ".3e"),
        exact_eps0=all(r["max_abs_dev_eps0"] < 1e-9 for r in alphas),
        a_big2=alpha(i_big, "alpha", "a_big2", "g"),
        gratio=alpha(i_big, "grad_norm_ratio", "gratio", ".4g"))


def _conv(N: Reader, c: dict) -> dict[str, Any]:
    """A real convolution followed by BatchNorm2d: the same cancellation, channel by channel."""
    return dict(
        cin=N("cin", ["conv", "in_channels"], "int"), cout=N("cout", ["conv", "out_channels"], "int"),
        conv_dy=N("conv_dy", ["conv", "max_abs_diff_new_bias"], ".1e"),
        conv_dy0=N("conv_dy0", ["conv", "max_abs_diff_no_bias"], ".1e"),
        conv_gb=N("conv_gb", ["conv", "max_abs_grad_bias"], ".1e"),
        conv_gw=N("conv_gw", ["conv", "grad_weight_norm"], ".4g"),
        conv_ok=c["max_abs_diff_new_bias"] < 1e-9 and c["max_abs_grad_bias"] < 1e-9 * c["grad_weight_norm"])


def _cifar(N: Reader, cifar: dict | None) -> SectionData | None:
    """Whether cnnlab's CIFAR-10 BatchNorm network leaves out the biases before BatchNorm."""
    if not cifar:
        return None
    return SectionData(model=cifar["model"], layers=N("cifar_n", ["cifar", "layers_before_batchnorm"], "int"),
                       with_bias=N("cifar_b", ["cifar", "with_bias"], "int"),
                       follows=cifar["with_bias"] == 0 and cifar["layers_before_batchnorm"] > 0)
