"""Section: the three CIFAR-10 networks trained from scratch (``cnnlab train``, ``cnnlab compare``)
and the BatchNorm study (``cnnlab bn-study``).

Each network trains with the report's seeds (``cnnlab report --seeds K``: seeds ``--seed`` ..
``--seed + K - 1``, each a cached run); its table shows the single value for one seed, else the
mean ± sample standard deviation over the seeds (:func:`cnnlab.train.seeds.summarize`). The
BatchNorm study trains both hw-mish nets under one recipe and sweeps the learning rate;
:func:`study_facts` turns its numbers into the statements the template words. Shown by
``templates/sections/cifar10.html.j2``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cnnlab.report.section import Num, SectionContext, SectionData, json_get
from cnnlab.runs import read_json

ID = "cifar10"
TITLE = "CIFAR-10: three networks trained from scratch"
SOURCES = ("cnnlab.models.cifar", "cnnlab.train.config", "cnnlab.train.loop", "cnnlab.train.state",
           "cnnlab.train.experiment", "cnnlab.train.study", "cnnlab.precision", "cnnlab.data.cifar10",
           "cnnlab.plots.training")
MODELS = ("hw-mish", "hw-mish-bn", "improved")
STUDY_MODELS = ("hw-mish", "hw-mish-bn")  # without and with BatchNorm


@dataclass
class Trained:
    """One network's runs, one per seed, and their ``result.json`` contents."""

    model: str
    seeds: list[int]
    dirs: list[Path]
    srcs: list[Path]
    data: list[dict[str, Any]]
    N: Callable[..., Num]  # reads the first seed's result.json; keys "<model>.<key>"

    @property
    def first(self) -> dict[str, Any]:
        return self.data[0]


def flip_words(recipe: dict) -> str:
    """How a recipe mirrors the training images."""
    if not recipe["flip"]:
        return "no"
    return "alternating (each image in every other epoch)" if recipe.get("alternate_flip") else "random (p = 1/2)"


def _data_options(ctx: SectionContext) -> dict:
    if ctx.profile.synthetic:
        from cnnlab.data.cifar10 import write_synthetic

        root = ctx.work / "inputs" / "cifar"
        if not (root / ".complete").exists():
            write_synthetic(root, n_train=100, n_test=40)
            (root / ".complete").touch()
        return {"data_root": str(root.resolve()), "verify_md5": False, "download": False, "precision": "fp32"}
    return {"data_root": str(ctx.data_root)} if ctx.data_root is not None else {}


def _train(ctx: SectionContext, model: str, data_opts: dict, seeds: list[int]) -> Trained:
    """``model`` trained once per seed (cached runs keyed on the resolved training config)."""
    import cnnlab.train as train
    from cnnlab.train.config import run_key

    cfg = {"model": model, **ctx.profile.train.get(model, {}), **data_opts}
    dirs = []
    for seed in seeds:
        opts = {**ctx.common, "seed": seed}
        key = {**cfg, "run_key": run_key(train.Config(**cfg, **opts))}
        dirs.append(ctx.cached(f"train-{model}", key, lambda d, opts=opts: train.run(train.Config(
            out=d, **cfg, **opts))))
    srcs = [d / "result.json" for d in dirs]
    data = [read_json(s) for s in srcs]
    return Trained(model, seeds, dirs, srcs, data, ctx.reader(srcs[0], data[0], prefix=f"{model}."))


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of one number over seeds, as ``cnnlab train-seeds`` computes them."""
    from cnnlab.train.seeds import METRICS, summarize

    name = METRICS[0]
    mean, std = summarize([SimpleNamespace(**{**dict.fromkeys(METRICS), name: v}) for v in values])
    return mean[name], std[name]


def _stat(ctx: SectionContext, t: Trained, key: str, path: list, spec: str) -> SectionData:
    """One number of ``t`` over its seeds: ``mean`` (the value itself for one seed) and ``std`` (None for one)."""
    if len(t.data) == 1:
        return SectionData(mean=t.N(key, path, spec), std=None, value=json_get(t.first, path))
    mean, std = mean_std([json_get(d, path) for d in t.data])
    where = f"result.json {path} of the runs {', '.join(ctx.rel(d) for d in t.dirs)}"
    return SectionData(mean=ctx.derived(f"{t.model}.{key}", mean, spec, f"mean of {where}"),
                       std=ctx.derived(f"{t.model}.{key}_std", std, spec,
                                       f"sample standard deviation (n - 1) of {where}"),
                       value=mean)


def _precise_bn(ctx: SectionContext, t: Trained) -> SectionData | None:
    if not t.first.get("precise_bn"):
        return None
    return _stat(ctx, t, "acc_before_precise_bn", ["precise_bn", "test_accuracy_before"], ".2%")


def _table(ctx: SectionContext, trained: dict[str, Trained]) -> list[SectionData]:
    """The rows of the networks' table: ``kind`` says how the template shows the cells."""
    ts = [trained[m] for m in MODELS]

    def stat(label, key, path, spec):
        return SectionData(label=label, kind="stat", cells=[_stat(ctx, t, key, path, spec) for t in ts])

    def num(label, key, path, spec):
        return SectionData(label=label, kind="num", cells=[t.N(key, path, spec) for t in ts])

    def text(label, fn, kind="text"):
        return SectionData(label=label, kind=kind, cells=[fn(t) for t in ts])

    return [
        stat("test accuracy", "acc", ["test_accuracy"], ".2%"),
        stat("test accuracy without test-time augmentation", "acc_plain", ["test_accuracy_plain"], ".2%"),
        num("parameters", "params", ["parameters"], "int"),
        num("epochs", "epochs", ["epochs"], "int"),
        num("batch size", "bs", ["recipe", "batch_size"], "int"),
        num("peak learning rate", "lr", ["recipe", "lr"], "g"),
        num("momentum", "mom", ["recipe", "momentum"], "g"),
        num("weight decay", "wd", ["recipe", "weight_decay"], ".3g"),
        num("label smoothing", "ls", ["recipe", "label_smoothing"], "g"),
        num("augmentation: translate (px)", "tr", ["recipe", "translate"], "int"),
        text("augmentation: flip", lambda t: flip_words(t.first["recipe"])),
        text("test-time augmentation", lambda t: "mirror + 1-px shifts" if t.first["recipe"].get("tta") else "no"),
        text("precise BatchNorm statistics after training", lambda t: _precise_bn(ctx, t), "precise_bn"),
        text("optimizer", lambda t: t.first["optimizer"], "code"),
        text("schedule", lambda t: t.first["recipe"].get("note", ""), "code"),
        text("initialization", lambda t: t.first["init_scheme"], "code"),
        stat("training time (s)", "train_s", ["train_seconds"], ".0f"),
    ]


def _own_recipes(ctx: SectionContext, trained: dict[str, Trained]) -> SectionData:
    """hw-mish against hw-mish-bn, each under its own recipe (first seed): the loss curves and what differs."""
    import cnnlab.train.compare as compare

    a, b = trained["hw-mish"], trained["hw-mish-bn"]
    cmp_cfg = {"runs": [ctx.rel(a.dirs[0]), ctx.rel(b.dirs[0])], "metric": "train_loss"}
    cmp_dir = ctx.cached("compare", cmp_cfg, lambda d: compare.run(compare.Config(
        runs=[a.dirs[0], b.dirs[0]], metric="train_loss", labels=["without BatchNorm", "with BatchNorm"],
        out=d, quiet=True)))
    h0, h1 = a.first["history"], b.first["history"]
    n = min(len(h0), len(h1))
    lower = sum(h1[i]["train_loss"] < h0[i]["train_loss"] for i in range(n))
    r0, r1 = a.first["recipe"], b.first["recipe"]
    data = SectionData(figure=ctx.figure(cmp_dir / "compare.png"), epochs=n,
                       differs=[k.replace("_", " ") for k in r0 if k != "note" and r0[k] != r1.get(k)])
    if n:
        last = n - 1
        data.compared = ctx.derived("epochs_compared", n, "int", "epochs in both histories")
        data.lower = ctx.derived("bn_lower_epochs", lower, "int", "epochs where hw-mish-bn's train loss < hw-mish's")
        data.lower_always = lower == n
        data.lower_at_end = h1[last]["train_loss"] < h0[last]["train_loss"]
        data.last_epoch = a.N("last_epoch", ["history", last, "epoch"], "int")
        data.bn_loss = b.N("last_loss", ["history", last, "train_loss"], ".4f")
        data.plain_loss = a.N("last_loss", ["history", last, "train_loss"], ".4f")
    return data


def _figures(ctx: SectionContext, trained: dict[str, Trained], name: str) -> list[SectionData]:
    """``name`` (loss.png, filters.png) of each network's first seed, where its run wrote one."""
    return [SectionData(model=m, figure=ctx.figure(t.dirs[0] / name, wide=m != "improved"))
            for m, t in trained.items() if (t.dirs[0] / name).exists()]


def _architectures() -> list[SectionData]:
    """Each network's design, from the code's own documentation, and its layers."""
    from cnnlab.models import cifar

    nets = []
    for m in MODELS:
        net = cifar.build(m)
        nets.append(SectionData(model=m, summary=inspect.cleandoc(cifar.MODELS.get(m).__doc__ or ""),
                                doc=inspect.cleandoc(type(net).__doc__ or "") if m != "hw-mish-bn" else None,
                                layers=str(net)))
    return nets


def _seed_numbers(ctx: SectionContext, seeds: list[int]) -> dict[str, Num]:
    """The first seed, and for several the number of seeds and the last one."""
    nums = dict(first_seed=ctx.derived("first_seed", seeds[0], "int", "the report's --seed"))
    if len(seeds) > 1:
        nums.update(seeds=ctx.derived("seeds", len(seeds), "int", "seeds per network (cnnlab report --seeds)"),
                    last_seed=ctx.derived("last_seed", seeds[-1], "int", "--seed + --seeds - 1"))
    return nums


def collect(ctx: SectionContext) -> SectionData:
    data_opts = _data_options(ctx)
    first = ctx.common.get("seed", 0)
    seeds = list(range(first, first + ctx.report.seeds))
    trained = {m: _train(ctx, m, data_opts, seeds) for m in MODELS}
    table = _table(ctx, trained)
    accuracy = {m: cell.value for m, cell in zip(MODELS, table[0].cells)}
    return SectionData(
        profile=ctx.profile.name, synthetic=ctx.profile.synthetic, full=ctx.profile.name == "full",
        models=MODELS, table=table, n_seeds=len(seeds), **_seed_numbers(ctx, seeds),
        own=_own_recipes(ctx, trained),
        losses=_figures(ctx, trained, "loss.png"), filters=_figures(ctx, trained, "filters.png"),
        best=max(MODELS, key=accuracy.get),
        improved_beats=all(accuracy["improved"] > accuracy[m] for m in MODELS[:2]),
        study=_study(ctx, data_opts, trained["hw-mish"].dirs[0]), architectures=_architectures())


# ---------------------------------------------------------------------- the BatchNorm study
def study_facts(data: dict[str, Any]) -> dict[str, Any]:
    """What ``study.json``'s numbers say, as flags and row indices the template words.

    ``lower_*``: hw-mish-bn's training loss against hw-mish's under the shared recipe;
    ``max_stable[m]`` / ``best[m]``: the index into ``sweep`` of the largest learning rate at which
    ``m`` trained without diverging / of its best validation accuracy (None: every rate diverged).
    """
    h0, h1 = (data["same_recipe"][m]["history"] for m in STUDY_MODELS)
    n = min(len(h0), len(h1))
    lower = sum(h1[i]["train_loss"] < h0[i]["train_loss"] for i in range(n))
    rows = list(enumerate(data["sweep"]))
    max_stable, best = {}, {}
    for m in STUDY_MODELS:
        ok = [(i, r) for i, r in rows if r["model"] == m and not r["diverged"]]
        max_stable[m] = max(ok, key=lambda ir: ir[1]["lr"])[0] if ok else None
        best[m] = max(ok, key=lambda ir: ir[1]["val_accuracy"])[0] if ok else None
    lr = {m: None if i is None else data["sweep"][i]["lr"] for m, i in max_stable.items()}
    plain, bn = lr["hw-mish"], lr["hw-mish-bn"]
    vals = [data["pair_accuracy"][m] for m in STUDY_MODELS]
    return dict(
        epochs=n, lower=lower, lower_always=n > 0 and lower == n,
        lower_at_end=n > 0 and h1[n - 1]["train_loss"] < h0[n - 1]["train_loss"],
        loss_gap=h0[n - 1]["train_loss"] - h1[n - 1]["train_loss"] if n else None,
        acc_higher=None not in vals and vals[1] > vals[0],
        max_stable=max_stable, best=best,
        bn_larger_lr=bn is not None and (plain is None or bn > plain),
        plain_larger_lr=plain is not None and (bn is None or plain > bn),
        none_stable=plain is None and bn is None)


# (label, recipe key, format) of the study's recipe table; the Muon rows when the recipe uses Muon
STUDY_RECIPE_ROWS = (
    ("epochs", "epochs", "int"), ("batch size", "batch_size", "int"), ("peak learning rate", "lr", "g"),
    ("momentum", "momentum", "g"), ("weight decay", "weight_decay", ".3g"),
    ("label smoothing", "label_smoothing", "g"), ("warm-up (fraction of the steps)", "warmup", "g"),
    ("augmentation: translate (px)", "translate", "int"))
STUDY_MUON_ROWS = (("Muon's peak learning rate (conv filters; the rest takes SGD)", "muon_lr", "g"),
                   ("Muon's momentum", "muon_momentum", "g"))


def _study(ctx: SectionContext, data_opts: dict, plain_run: Path) -> SectionData | None:
    """The profile's BatchNorm study (``cnnlab bn-study``) as a cached run; None when the profile has none.
    Its same-recipe pair is the report's own ``hw-mish`` run (first seed) and ``hw-mish-bn`` trained
    with exactly that run's options."""
    if not ctx.profile.bn_study:
        return None
    import cnnlab.train.study as study

    cfg = {**ctx.profile.bn_study, **{k: data_opts[k] for k in ("data_root", "verify_md5", "precision")
                                      if k in data_opts}, "pair_from": str(plain_run)}
    run_dir = ctx.cached("bn-study", cfg, lambda d: study.run(study.Config(out=d, **cfg, **ctx.common)))
    src = run_dir / "study.json"
    data = read_json(src)
    N = ctx.reader(src, data, prefix="study.")
    facts = study_facts(data)
    recipe = data["recipe"]
    muon = recipe.get("optimizer") == "muon"
    rows = STUDY_RECIPE_ROWS + (STUDY_MUON_ROWS if muon else ())
    return SectionData(
        recipe_of=data["recipe_of"], val_split=N("val_split", ["val_split"], "int"), muon=muon,
        pair_on=data["pair_accuracy"]["on"], pair_from=data.get("pair_from"),
        lookahead=bool(recipe.get("lookahead")),
        sweep_epochs=N("sweep_epochs", ["sweep_epochs"], "int"), sweep_epochs_n=data["sweep_epochs"],
        recipe=[SectionData(label=label, value=N(f"recipe.{key}", ["recipe", key], spec)) for label, key, spec in rows],
        flip=flip_words(recipe), tta=bool(recipe.get("tta")), precise_bn=bool(recipe.get("precise_bn")),
        curves=ctx.figure(run_dir / "curves.png"), curves_val=ctx.figure(run_dir / "curves_val.png"),
        sweep_figure=ctx.figure(run_dir / "sweep.png"), facts=facts, **_same_recipe(ctx, N, data, facts),
        sweep=_sweep_rows(N, data), **_sweep_facts(N, data, facts))


def _same_recipe(ctx: SectionContext, N: Callable[..., Num], data: dict, facts: dict) -> dict[str, Any]:
    """The shared-recipe runs' last training losses and validation accuracies, and their difference."""
    n = facts["epochs"]
    if not n:
        return dict(last_epoch=None)
    last = n - 1
    nums = {}
    for m, short in zip(STUDY_MODELS, ("plain", "bn")):
        base = ["same_recipe", m]
        nums[f"{short}_loss"] = N(f"{m}.last_loss", [*base, "history", last, "train_loss"], ".4f")
        acc = data["pair_accuracy"][m]
        nums[f"{short}_acc"] = None if acc is None else N(f"{m}.pair_accuracy", ["pair_accuracy", m], ".2%")
    return dict(last_epoch=N("last_epoch", ["same_recipe", "hw-mish", "history", last, "epoch"], "int"),
                compared=ctx.derived("study.epochs_compared", n, "int", "epochs in both shared-recipe histories"),
                lower=ctx.derived("study.bn_lower_epochs", facts["lower"], "int",
                                  "shared-recipe epochs where hw-mish-bn's train loss < hw-mish's"),
                gap=ctx.derived("study.loss_gap", abs(facts["loss_gap"]), ".4f",
                                "|hw-mish's - hw-mish-bn's train loss| at the last shared-recipe epoch"),
                **nums)


def _sweep_rows(N: Callable[..., Num], data: dict) -> list[SectionData]:
    """The sweep table: one row per learning rate, one cell per net (validation accuracy, or why it diverged)."""
    cells = {(r["lr"], r["model"]): (i, r) for i, r in enumerate(data["sweep"])}
    rows = []
    for lr in sorted({r["lr"] for r in data["sweep"]}):
        row = SectionData(lr=None, cells=[])
        for m in STUDY_MODELS:
            if (lr, m) not in cells:
                row.cells.append(None)
                continue
            i, r = cells[(lr, m)]
            row.lr = row.lr or N(f"sweep{i}.lr", ["sweep", i, "lr"], "g")
            row.cells.append(SectionData(diverged=r["diverged"], reason=r.get("reason", ""),
                                         val=None if r["val_accuracy"] is None
                                         else N(f"sweep{i}.val", ["sweep", i, "val_accuracy"], ".2%")))
        rows.append(row)
    return rows


def _sweep_facts(N: Callable[..., Num], data: dict, facts: dict) -> dict[str, Any]:
    """Per net: the largest rate that trained without diverging, and the rate of its best validation accuracy."""
    per_net = []
    for m in STUDY_MODELS:
        i, j = facts["max_stable"][m], facts["best"][m]
        per_net.append(SectionData(
            model=m, max_lr=None if i is None else N(f"sweep{i}.lr", ["sweep", i, "lr"], "g"),
            best_lr=None if j is None else N(f"sweep{j}.lr", ["sweep", j, "lr"], "g"),
            best_val=None if j is None else N(f"sweep{j}.val", ["sweep", j, "val_accuracy"], ".2%")))
    return dict(nets=per_net)
