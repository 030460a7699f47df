"""Section: the three CIFAR-10 networks trained from scratch (``cnnlab train`` and ``cnnlab compare``)."""

from __future__ import annotations

import inspect

from cnnlab.report.section import HtmlSectionContext as Context, Section, esc
from cnnlab.runs import read_json

ID = "cifar10"
TITLE = "CIFAR-10: three networks trained from scratch"
SOURCES = ("cnnlab.models.cifar", "cnnlab.train.config", "cnnlab.train.loop", "cnnlab.train.state",
           "cnnlab.train.experiment", "cnnlab.precision", "cnnlab.data.cifar10", "cnnlab.plots.training")
MODELS = ("hw-mish", "hw-mish-bn", "improved")


def flip_words(recipe: dict) -> str:
    """How a recipe mirrors the training images (``alternate_flip`` is absent from older runs)."""
    if not recipe["flip"]:
        return "no"
    return "alternating (each image in every other epoch)" if recipe.get("alternate_flip") else "random (p = 1/2)"


def _data_options(ctx: Context) -> dict:
    if ctx.profile.synthetic:
        from cnnlab.data.cifar10 import write_synthetic

        root = ctx.work / "inputs" / "cifar"
        if not (root / ".complete").exists():
            write_synthetic(root, n_train=100, n_test=40)
            (root / ".complete").touch()
        return {"data_root": str(root.resolve()), "verify_md5": False, "download": False, "precision": "fp32"}
    return {"data_root": str(ctx.data_root)} if ctx.data_root is not None else {}


def build(ctx: Context) -> Section:
    import cnnlab.train as train
    import cnnlab.train.compare as compare
    from cnnlab.train.config import run_key
    from cnnlab.models import cifar

    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    data_opts = _data_options(ctx)
    runs, results, srcs = {}, {}, {}
    for name in MODELS:
        cfg = {"model": name, **ctx.profile.train.get(name, {}), **data_opts}
        # The cache key holds the run key (resolved recipe and its version), so a changed default
        # (epochs, lr, ...) trains anew.
        key = {**cfg, "run_key": run_key(train.Config(**cfg))}
        runs[name] = ctx.cached(f"train-{name}", key, lambda d, cfg=cfg: train.run(train.Config(
            out=d, **cfg, **ctx.common)))
        srcs[name] = runs[name] / "result.json"
        results[name] = read_json(srcs[name])
    cmp_cfg = {"runs": [ctx.rel(runs["hw-mish"]), ctx.rel(runs["hw-mish-bn"])], "metric": "train_loss"}
    cmp_dir = ctx.cached("compare", cmp_cfg, lambda d: compare.run(compare.Config(
        runs=[runs["hw-mish"], runs["hw-mish-bn"]], metric="train_loss", labels=["without BatchNorm", "with BatchNorm"],
        out=d, quiet=True)))

    def N(model, key, path, spec, unit=""):
        value = results[model]
        for k in path:
            value = value[k]
        return ctx.num(f"{model}.{key}", value, spec, srcs[model], path, unit)

    r0 = results["hw-mish"]
    parts = [f"<p>Three networks from cnnlab's model registry, trained on CIFAR-10 "
             f"({'a small synthetic CIFAR-format set in this smoke-test profile' if ctx.profile.synthetic else 'the official binary release'}"
             ") with the settings below. Profile <b>", esc(ctx.profile.name), "</b>",
             (": short runs, so the accuracies are far from what the full schedules reach."
              if ctx.profile.name != "full" else ": each network's full training schedule."), "</p>"]
    head = "".join(f"<th>{m}</th>" for m in MODELS)

    def row(label, key, path, spec):
        return f"<tr><th>{label}</th>" + "".join(f"<td>{N(m, key, path, spec)}</td>" for m in MODELS) + "</tr>"

    def srow(label, fn):
        return f"<tr><th>{label}</th>" + "".join(f"<td>{fn(m)}</td>" for m in MODELS) + "</tr>"

    def precise_bn(m):
        if not results[m].get("precise_bn"):
            return "no"
        return ("yes (plain test accuracy before: "
                + N(m, "acc_before_precise_bn", ["precise_bn", "test_accuracy_before"], ".2%") + ")")

    parts.append('<div class="table-wrap"><table><thead><tr><th></th>' + head + "</tr></thead><tbody>"
                 + row("test accuracy", "acc", ["test_accuracy"], ".2%")
                 + row("test accuracy without test-time augmentation", "acc_plain", ["test_accuracy_plain"], ".2%")
                 + row("parameters", "params", ["parameters"], "int")
                 + row("epochs", "epochs", ["epochs"], "int")
                 + row("batch size", "bs", ["recipe", "batch_size"], "int")
                 + row("peak learning rate", "lr", ["recipe", "lr"], "g")
                 + row("momentum", "mom", ["recipe", "momentum"], "g")
                 + row("weight decay", "wd", ["recipe", "weight_decay"], ".3g")
                 + row("label smoothing", "ls", ["recipe", "label_smoothing"], "g")
                 + row("augmentation: translate (px)", "tr", ["recipe", "translate"], "int")
                 + srow("augmentation: flip", lambda m: flip_words(results[m]["recipe"]))
                 + srow("test-time augmentation", lambda m: "mirror + 1-px shifts" if results[m]["recipe"].get("tta")
                        else "no")
                 + srow("precise BatchNorm statistics after training", precise_bn)
                 + srow("optimizer", lambda m: f'<code>{esc(results[m]["optimizer"])}</code>')
                 + srow("schedule", lambda m: f'<code>{esc(results[m]["recipe"].get("note", ""))}</code>')
                 + srow("initialization", lambda m: f'<code>{esc(results[m]["init_scheme"])}</code>')
                 + row("training time (s)", "train_s", ["train_seconds"], ".0f")
                 + "</tbody></table></div>")

    # --- BatchNorm or not: the loss per epoch, and what it says
    h0, h1 = r0["history"], results["hw-mish-bn"]["history"]
    n = min(len(h0), len(h1))
    lower = sum(h1[i]["train_loss"] < h0[i]["train_loss"] for i in range(n))
    parts.append(ctx.figure(cmp_dir / "compare.png", "Training loss per epoch of <code>hw-mish</code> without and "
                            "with BatchNorm (<code>hw-mish-bn</code>), same axes."))
    if n:
        last = n - 1
        verdict = ("With BatchNorm the training loss is lower at every epoch" if lower == n else
                   "With BatchNorm the training loss is lower at the last epoch" if h1[last]["train_loss"] < h0[last]["train_loss"] else
                   "Here BatchNorm did <b>not</b> train faster: its training loss is not lower at the last epoch")
        parts.append(f"<p>{verdict} (" + ctx.derived("bn_lower_epochs", lower, "int", "epochs where hw-mish-bn's train loss < hw-mish's")
                     + " of " + ctx.derived("epochs_compared", n, "int", "epochs in both histories") + " epochs). After epoch "
                     + N("hw-mish", "last_epoch", ["history", last, "epoch"], "int") + ": "
                     + N("hw-mish-bn", "last_loss", ["history", last, "train_loss"], ".4f") + " with BatchNorm against "
                     + N("hw-mish", "last_loss", ["history", last, "train_loss"], ".4f") + " without. The BatchNorm "
                     "network also runs at a peak learning rate of " + N("hw-mish-bn", "lr2", ["recipe", "lr"], "g")
                     + " against " + N("hw-mish", "lr2", ["recipe", "lr"], "g")
                     + ": tolerating a larger step is part of what BatchNorm buys. Its convolutions have no bias "
                     "(see the BatchNorm section).</p>")
    for m in MODELS:
        if (runs[m] / "loss.png").exists():
            parts.append(ctx.figure(runs[m] / "loss.png", f"<code>{m}</code>: loss and accuracy per epoch."))
    best = max(MODELS, key=lambda m: results[m]["test_accuracy"])
    beats = all(results["improved"]["test_accuracy"] > results[m]["test_accuracy"] for m in MODELS[:2])
    parts.append("<p>The best test accuracy is <code>" + esc(best) + "</code>'s. "
                 + ("<code>improved</code> beats both specified networks."
                    if beats else "<code>improved</code> does <b>not</b> beat both specified networks in this run.")
                 + "</p>")

    # --- filters
    for m in MODELS:
        if (runs[m] / "filters.png").exists():
            parts.append(ctx.figure(runs[m] / "filters.png", f"<code>{m}</code>: the first-layer filters after training, "
                                    "each contrast-stretched on its own (minimum over its three channels subtracted, "
                                    "divided by its new maximum), enlarged with nearest-neighbour.", wide=m != "improved"))

    # --- architecture and design choices, from the code's own documentation
    parts.append("<h3>Architectures and design choices</h3>")
    for m in MODELS:
        net = cifar.build(m)
        doc = inspect.cleandoc(type(net).__doc__ or "")
        builder_doc = inspect.cleandoc(cifar.MODELS.get(m).__doc__ or "")
        parts.append(f"<h4><code>{m}</code></h4><p>{esc(builder_doc)}</p>")
        if m != "hw-mish-bn":
            parts.append(f'<pre class="doc">{esc(doc)}</pre>')
        parts.append(f'<details><summary>layers</summary><pre class="config">{esc(str(net))}</pre></details>')
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec
