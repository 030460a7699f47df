"""Section: transfer learning with a linear probe on pretrained features (``cnnlab probe``)."""

from __future__ import annotations

from cnnlab.report.section import HtmlSectionContext as Context, Section, esc
from cnnlab.runs import read_json

ID = "transfer"
TITLE = "Transfer learning: a linear probe on pretrained features"
SOURCES = ("cnnlab.probe.run", "cnnlab.probe.extract", "cnnlab.probe.classify", "cnnlab.data.pets")


def build(ctx: Context) -> Section:
    import cnnlab.probe.run as probe

    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
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
    run_dir = ctx.cached("probe", cfg, lambda d: probe.run(probe.Config(
        out=d, cache_dir=ctx.work / "feature-cache", download=False, **cfg, **ctx.common)))
    src = run_dir / "results.json"
    data = read_json(src)

    def N(key, path, spec):
        value = data
        for k in path:
            value = value[k]
        return ctx.num(key, value, spec, src, path)

    present = [(i, r) for i, r in enumerate(data["per_class"]) if r["n_test"] > 0]
    chance = 1 / len(present) if present else float("nan")
    mpca = data["mean_per_class_accuracy"]
    verdict = ("far above" if mpca >= 3 * chance else "above" if mpca > 1.5 * chance else "not clearly above")
    ext = data["extraction"]
    parts = [
        f"<p>A pretrained <b>{esc(data['model'])}</b> (<code>{esc(data['weights'])}</code>) is used as a fixed feature "
        "extractor on <b>", esc(data["dataset"]), "</b>: the ", N("dim", ["feature_dim"], "int"),
        "-dimensional activations of its last hidden layer after global pooling (never the 1000 ImageNet logits), "
        "L2-normalized, then a linear classifier (", esc(data["classifier"]),
        ": multinomial logistic regression with L-BFGS for <code>logistic</code>) is trained on ",
        N("ntrain", ["n_train"], "int"), " trainval images and evaluated on ", N("ntest", ["n_test"], "int"),
        " test images. This follows Kornblith et al. (2019), <i>Do Better ImageNet Models Transfer Better?</i></p>",
        "<p>The regularization ", ctx.tex(r"C = 1/\lambda"), " was chosen on a validation split held out from "
        "trainval, over ", str(len(data["grid"])), " log-spaced values from ", N("cmin", ["grid", 0], "g"), " to ",
        N("cmax", ["grid", len(data["grid"]) - 1], "g"), "; the chosen <b>C = ", N("C", ["C"], "g"),
        "</b>, refit on all of trainval.</p>",
        '<div class="table-wrap"><table><tbody>',
        "<tr><th>mean-per-class accuracy (the Pets metric)</th><td><b>",
        N("mpca", ["mean_per_class_accuracy"], ".1%"), "</b></td></tr>",
        "<tr><th>overall accuracy</th><td>", N("acc", ["overall_accuracy"], ".1%"), "</td></tr>",
        "<tr><th>chance (one over the classes with test images)</th><td>",
        ctx.derived("chance", chance, ".1%", "1 / number of classes with test images"), "</td></tr>",
        "</tbody></table></div>",
        f"<p>The probe is {verdict} chance: features learned for ImageNet separate these classes "
        + ("with a single linear layer on top." if verdict != "not clearly above" else "only weakly here.") + "</p>",
    ]
    for split in ("trainval", "test"):
        e = ext.get(split) or {}
        if e.get("images_per_second") is not None:
            parts.append(f"<p class=\"muted\">{split} features: {esc(e.get('cache'))}, "
                         + N(f"ips_{split}", ["extraction", split, "images_per_second"], ".1f")
                         + f" images/s in {esc(e.get('precision'))}.</p>")
    for note in data.get("notes", []):
        parts.append(f'<p class="muted">Note: {esc(note)}</p>')
    rows = "".join(
        f"<tr><td>{esc(r['class'])}</td><td>{N(f'ntr{i}', ['per_class', i, 'n_train'], 'int')}</td>"
        f"<td>{N(f'nte{i}', ['per_class', i, 'n_test'], 'int')}</td>"
        f"<td>{N(f'acc{i}', ['per_class', i, 'accuracy'], '.0%')}</td></tr>" for i, r in present)
    parts.append("<details><summary>Per-class accuracy</summary><div class=\"table-wrap\"><table><thead><tr>"
                 "<th>class</th><th>train</th><th>test</th><th>accuracy</th></tr></thead>"
                 f"<tbody>{rows}</tbody></table></div></details>")
    parts.append(ctx.figure(run_dir / "confusion.png", "Confusion matrix on the test split (rows: true class).",
                            wide=len(data["per_class"]) > 10))
    if (run_dir / "validation.png").exists():
        parts.append(ctx.figure(run_dir / "validation.png", "Validation mean-per-class accuracy against C."))
    if "oxford" in data["dataset"] and data["n_test"] < 3000:
        parts.append('<p class="muted">These images are a subset of Oxford-IIIT Pet, so the numbers are not '
                     "comparable to published Pets results (which use all 3,669 test images).</p>")
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec
