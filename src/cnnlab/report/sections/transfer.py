"""Section: transfer learning with a linear probe on pretrained features (``cnnlab probe``).

Shown by ``templates/sections/transfer.html.j2``.
"""

from __future__ import annotations

from typing import Any

from cnnlab.report.section import SectionContext, SectionData
from cnnlab.runs import read_json

ID = "transfer"
TITLE = "Transfer learning: a linear probe on pretrained features"
SOURCES = ("cnnlab.probe.run", "cnnlab.probe.extract", "cnnlab.probe.classify", "cnnlab.data.pets")


def probe_config(ctx: SectionContext) -> dict[str, Any]:
    """The probe's options: a small synthetic image folder in the smoke profile, else Oxford-IIIT Pet."""
    opts = dict(ctx.profile.probe)
    if ctx.profile.synthetic:
        from cnnlab.report.synthetic import image_folder

        folder = image_folder(ctx.work / "inputs" / "folder", classes=opts.pop("classes", 3),
                              per_class=opts.pop("images_per_class", 6))
        cfg = {"dataset": f"imagefolder:{folder.resolve()}", "c_steps": 3, "c_min": 1.0, "c_max": 100.0,
               "precision": "fp32", "workers": 0, **opts}
    else:
        cfg = {"dataset": "oxford-pets", **opts}
        if ctx.data_root is not None:
            cfg["data_root"] = str(ctx.data_root)
    cfg.setdefault("model", "mobilenet_v2")
    return cfg


def collect(ctx: SectionContext) -> SectionData:
    import cnnlab.probe.run as probe

    cfg = probe_config(ctx)
    run_dir = ctx.cached("probe", cfg, lambda d: probe.run(probe.Config(
        out=d, cache_dir=ctx.work / "feature-cache", download=False, **cfg, **ctx.common)))
    src = run_dir / "results.json"
    data = read_json(src)
    N = ctx.reader(src, data)
    present = [(i, r) for i, r in enumerate(data["per_class"]) if r["n_test"] > 0]
    chance = 1 / len(present) if present else float("nan")
    mpca = data["mean_per_class_accuracy"]
    grid = data["grid"]
    return SectionData(
        model=data["model"], weights=data["weights"], dataset=data["dataset"], classifier=data["classifier"],
        dim=N("dim", ["feature_dim"], "int"), ntrain=N("ntrain", ["n_train"], "int"),
        ntest=N("ntest", ["n_test"], "int"), n_grid=len(grid), cmin=N("cmin", ["grid", 0], "g"),
        cmax=N("cmax", ["grid", len(grid) - 1], "g"), C=N("C", ["C"], "g"),
        mpca=N("mpca", ["mean_per_class_accuracy"], ".1%"), acc=N("acc", ["overall_accuracy"], ".1%"),
        chance=ctx.derived("chance", chance, ".1%", "1 / number of classes with test images"),
        verdict="far above" if mpca >= 3 * chance else "above" if mpca > 1.5 * chance else "not clearly above",
        extraction=[SectionData(split=split, cache=str(e.get("cache")), precision=str(e.get("precision")),
                                ips=N(f"ips_{split}", ["extraction", split, "images_per_second"], ".1f"))
                    for split in ("trainval", "test")
                    if (e := data["extraction"].get(split) or {}).get("images_per_second") is not None],
        notes=data.get("notes", []),
        per_class=[SectionData(name=r["class"], n_train=N(f"ntr{i}", ["per_class", i, "n_train"], "int"),
                               n_test=N(f"nte{i}", ["per_class", i, "n_test"], "int"),
                               accuracy=N(f"acc{i}", ["per_class", i, "accuracy"], ".0%")) for i, r in present],
        confusion=ctx.figure(run_dir / "confusion.png", wide=len(data["per_class"]) > 10),
        validation=ctx.figure(run_dir / "validation.png") if (run_dir / "validation.png").exists() else None,
        pets_subset="oxford" in data["dataset"] and data["n_test"] < 3000)
