"""The BatchNorm invariance figure (pure: numbers in, ``Figure`` out)."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def invariance_figure(neuron: dict[str, Any], curves: dict[str, Any]) -> Figure:
    """Three panels: pre-BN x vs BN output for several biases; y(αw) vs y(w); the ε effect vs |α|.

    ``neuron`` is :func:`cnnlab.batchnorm.neuron_experiment`'s dict (needs ``x``, ``y``, ``bias``,
    ``alpha``, ``batch_var``, ``eps``); ``curves`` is :func:`cnnlab.batchnorm.sweep_curves`'s.
    """
    import numpy as np

    x, y = np.asarray(neuron["x"]), np.asarray(neuron["y"])
    order = np.argsort(x)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6), constrained_layout=True)

    ax = axes[0]
    biases = [r["b"] for r in neuron["bias"]][:4]
    for b in biases:
        ax.plot(np.arange(len(x)), (x + b)[order], lw=1, alpha=0.6, label=f"x, b={b:g}")
    ax.plot(np.arange(len(x)), y[order], "k-", lw=2.5, label="BN(x), every b")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xlabel("sample i (sorted by x)")
    ax.set_title("bias b shifts x, not BN(x)")
    ax.legend(fontsize=7, loc="upper left")

    ax = axes[1]
    lim = float(np.abs(y).max()) * 1.1
    for r in neuron["alpha"]:
        a = r["alpha"]
        ax.plot(y, r["y"], ".", ms=4, alpha=0.7, label=f"α={a:g}")
    ax.plot([-lim, lim], [-lim, lim], "k:", lw=0.8)
    ax.plot([-lim, lim], [lim, -lim], "k:", lw=0.8)
    ax.set_xlabel("BN output y(w)")
    ax.set_ylabel("BN output y(αw)")
    ax.set_title("α>0 keeps y, α<0 flips it")
    ax.legend(fontsize=7, ncol=2)

    ax = axes[2]
    ax.loglog(curves["alphas"], np.maximum(curves["measured_rel_dev"], 1e-18), "o", ms=3, label="measured")
    ax.loglog(curves["alphas"], np.maximum(curves["predicted_rel_dev"], 1e-18), "-", lw=1,
              label=r"$\sqrt{(\sigma^2+\varepsilon)/(\sigma^2+\varepsilon/\alpha^2)}-1$")
    ax.set_xlabel("|α|")
    ax.set_ylabel("max |y(αw) − y(w)| / max |y(w)|")
    ax.set_title(f"the ε effect (σ²={neuron['batch_var']:.3g}, ε={neuron['eps']:g})")
    ax.legend(fontsize=7)
    return fig
