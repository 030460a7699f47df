"""Section: why layers followed by BatchNorm need no bias (``cnnlab batchnorm``)."""

from __future__ import annotations

from pathlib import Path

from cnnlab.report.section import HtmlSectionContext as Context, Section, esc, json_get
from cnnlab.runs import read_json

ID = "batchnorm"
TITLE = "BatchNorm: the bias cancels, the scale does not matter"
SOURCES = ("cnnlab.batchnorm", "cnnlab.plots.batchnorm")


def _run(ctx: Context, cfg: dict) -> Path:
    import cnnlab.batchnorm as bn

    return ctx.cached("batchnorm", cfg, lambda d: bn.run(bn.Config(out=d, **cfg, **ctx.common)))


def build(ctx: Context) -> Section:
    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    cfg = dict(ctx.profile.batchnorm)
    run_dir = _run(ctx, cfg)
    src = run_dir / "batchnorm.json"
    data = read_json(src)
    n, c = data["neuron"], data["conv"]
    N = lambda key, path, spec, unit="": ctx.num(key, json_get(data, path), spec, src, path, unit)  # noqa: E731
    y_scale = max(abs(v) for v in n["y"])
    biases_ok = n["max_abs_diff_over_biases"] <= 1e-9 * y_scale
    grad_ok = n["max_abs_grad_b"] <= 1e-9 * n["grad_w_norm"]
    pos = [r for r in n["alpha"] if r["alpha"] > 0]
    neg = [r for r in n["alpha"] if r["alpha"] < 0]
    kept = ", ".join(N(f"alpha{i}", ["neuron", "alpha", i, "alpha"], "g")
                     for i, r in enumerate(n["alpha"]) if r["alpha"] > 0) or "none"
    flipped = ", ".join(N(f"alpha{i}", ["neuron", "alpha", i, "alpha"], "g")
                        for i, r in enumerate(n["alpha"]) if r["alpha"] < 0) or "none"
    exact_eps0 = all(r["max_abs_dev_eps0"] < 1e-9 for r in n["alpha"])
    i_small = min(range(len(n["alpha"])), key=lambda i: abs(n["alpha"][i]["alpha"]))
    i_big = max(range(len(n["alpha"])), key=lambda i: abs(n["alpha"][i]["alpha"]))
    conv_ok = c["max_abs_diff_new_bias"] < 1e-9 and c["max_abs_grad_bias"] < 1e-9 * c["grad_weight_norm"]

    parts = [
        "<p>For one neuron ", ctx.tex(r"x_i = w^\top h_i + b"), " over a mini-batch of ",
        N("B", ["neuron", "batch_size"], "int"), " inputs of dimension ", N("D", ["neuron", "features"], "int"),
        ", BatchNorm in training mode computes</p>",
        ctx.tex(r"\hat x_i = \frac{x_i-\mu_B}{\sqrt{\sigma_B^2+\varepsilon}},\qquad y_i=\gamma\hat x_i+\beta,",
                display=True),
        ctx.tex(r"\mu_B=\frac{1}{B}\sum_i x_i = w^\top\bar h + b .", display=True),
        "<p>Since ", ctx.tex(r"x_i-\mu_B = w^\top(h_i-\bar h)"), " does not contain ", ctx.tex("b"),
        ", the output cannot depend on the bias, and ", ctx.tex(r"\partial L/\partial b=\sum_i \partial L/\partial x_i"),
        " is zero because BatchNorm's backward pass removes the mean of the upstream gradient. "
        "Measured in float64 over the biases ",
        ", ".join(N(f"b{i}", ["neuron", "bias", i, "b"], "g") for i in range(len(n["bias"]))), ":</p><ul>",
        "<li>largest change of the output: ", N("max_dy_bias", ["neuron", "max_abs_diff_over_biases"], ".1e"),
        " (the input x itself moved by up to ",
        N("max_shift", ["neuron", "bias", max(range(len(n["bias"])), key=lambda i: abs(n["bias"][i]["b"])), "pre_bn_shift"], "g"),
        "), so the output is ", "identical up to rounding" if biases_ok else "<strong>not</strong> identical (unexpected)", ";</li>",
        "<li>largest |∂L/∂b|: ", N("max_grad_b", ["neuron", "max_abs_grad_b"], ".1e"), " against ‖∂L/∂w‖ = ",
        N("grad_w", ["neuron", "grad_w_norm"], ".3g"), ": the bias gradient is ",
        "zero up to rounding" if grad_ok else "<strong>not</strong> zero (unexpected)", ".</li></ul>",
        "<p><b>Scale.</b> With ", ctx.tex(r"w\to\alpha w"), ", ", ctx.tex(r"x_i-\mu_B"), " scales by α and ",
        ctx.tex(r"\sigma_B"), " by |α|, so the output is unchanged for α&nbsp;&gt;&nbsp;0 and flips sign for "
        "α&nbsp;&lt;&nbsp;0 — except for ε, whose effect is exactly</p>",
        ctx.tex(r"\hat x(\alpha w) = \operatorname{sign}(\alpha)\,\hat x(w)\,"
                r"\sqrt{\frac{\sigma_B^2+\varepsilon}{\sigma_B^2+\varepsilon/\alpha^2}} .", display=True),
        "<p>Here σ<sub>B</sub>² = ", N("var", ["neuron", "batch_var"], ".4g"), " and ε = ", N("eps", ["neuron", "eps"], "g"),
        ". At α = ", N("a_small", ["neuron", "alpha", i_small, "alpha"], "g"), " the predicted relative deviation is ",
        N("pred_small", ["neuron", "alpha", i_small, "predicted_rel_dev"], ".3e"), " and the measured one ",
        N("meas_small", ["neuron", "alpha", i_small, "max_rel_dev"], ".3e"), "; at α = ",
        N("a_big", ["neuron", "alpha", i_big, "alpha"], "g"), " they are ",
        N("pred_big", ["neuron", "alpha", i_big, "predicted_rel_dev"], ".3e"), " and ",
        N("meas_big", ["neuron", "alpha", i_big, "max_rel_dev"], ".3e"), ". With ε = 0 the invariance is ",
        "exact (every deviation below 10<sup>−9</sup>)" if exact_eps0 else "<strong>not</strong> exact (unexpected)",
        ". The scales tried were ", kept, " (kept) and ", flipped, " (flipped). "
        "The gradient with respect to w shrinks as 1/|α|: at α = ",
        N("a_big2", ["neuron", "alpha", i_big, "alpha"], "g"), " its norm is ",
        N("gratio", ["neuron", "alpha", i_big, "grad_norm_ratio"], ".4g"), " times the one at α = 1.</p>",
        ctx.figure(run_dir / "batchnorm.png", "Left: the bias shifts x but not BN(x). Middle: y(αw) against y(w) "
                   "for each α (on the diagonal for α&nbsp;&gt;&nbsp;0, the anti-diagonal for α&nbsp;&lt;&nbsp;0). "
                   "Right: the ε effect against |α|, measured and predicted.", wide=True),
        "<p><b>In a real convolution.</b> A ", N("cin", ["conv", "in_channels"], "int"), "→",
        N("cout", ["conv", "out_channels"], "int"), " 3×3 convolution with a bias, followed by BatchNorm2d with "
        "random γ and β: replacing the bias changes the output by at most ",
        N("conv_dy", ["conv", "max_abs_diff_new_bias"], ".1e"), ", removing it (<code>bias=False</code>) by ",
        N("conv_dy0", ["conv", "max_abs_diff_no_bias"], ".1e"), ", and the bias gradient is at most ",
        N("conv_gb", ["conv", "max_abs_grad_bias"], ".1e"), " against ‖∂L/∂W‖ = ",
        N("conv_gw", ["conv", "grad_weight_norm"], ".4g"), ". ",
        "The same cancellation holds channel by channel." if conv_ok else "<strong>The cancellation did not hold here (unexpected).</strong>",
        "</p>",
    ]
    cifar = data.get("cifar")
    if cifar:
        follows = cifar["with_bias"] == 0 and cifar["layers_before_batchnorm"] > 0
        parts += ["<p>cnnlab's CIFAR-10 BatchNorm network <code>", esc(cifar["model"]), "</code> has ",
                  N("cifar_n", ["cifar", "layers_before_batchnorm"], "int"), " layers feeding BatchNorm, ",
                  N("cifar_b", ["cifar", "with_bias"], "int"), " of them with a bias: ",
                  "it follows the rule." if follows else "<strong>it does not follow the rule.</strong>", "</p>"]
    parts += ["<div class=\"conclusion\"><p><b>What to do.</b></p><ul>",
              *[f"<li>{esc(line)}</li>" for line in data["conclusion"]], "</ul></div>", ctx.provenance()]
    sec.html = "".join(parts)
    return sec
