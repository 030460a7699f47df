"""Section: targeted adversarial examples and whether they survive image transforms
(``cnnlab attack`` and ``cnnlab robustness``)."""

from __future__ import annotations

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import Context, Section, esc
from cnnlab.runs import read_json

ID = "adversarial"
TITLE = "Adversarial examples"
SOURCES = ("cnnlab.attacks.base", "cnnlab.attacks.ascent", "cnnlab.attacks.pgd", "cnnlab.attacks.eot",
           "cnnlab.attacks.transforms", "cnnlab.attacks.run", "cnnlab.attacks.robustness")


def _identity(method: str, images: list[str]) -> dict:
    """What else decides an attack's result: the method's defaults (steps, step size, EOT's
    stopping rule...) and, for the default photos, their targets. In the cache key, so a changed
    default attacks anew instead of reusing an old run."""
    from cnnlab.attacks import ATTACKS
    from cnnlab.attacks.targets import default_targets

    cls = ATTACKS.get(method)
    defaults = {k: getattr(cls, k) for k in dir(cls) if k.startswith("default_")}
    return {"defaults": defaults, "targets": default_targets() if not images else None}


def build(ctx: Context) -> Section:
    import cnnlab.attacks.robustness as robustness
    import cnnlab.attacks.run as attack

    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    opts = dict(ctx.profile.attack)
    methods = list(opts.pop("methods", ("pgd",)))
    n_images = opts.pop("images", None)
    per_method = opts.pop("per_method", {})
    images: list[str] = []  # empty: the attack's defaults (peppers and three built-in photos)
    if n_images is not None:  # the smoke profile: the report's photo only
        images = [str(report_photo(ctx.data_root, ctx.work, ctx.photo)[0])][:n_images]
    runs, data, srcs = {}, {}, {}
    for method in methods:
        cfg = {"method": method, "images": images, **opts, **per_method.get(method, {})}
        runs[method] = ctx.cached(f"attack-{method}", {**cfg, "identity": _identity(method, images)},
                                  lambda d, cfg=cfg: attack.run(attack.Config(
            out=d, **cfg, **ctx.common)))
        srcs[method] = runs[method] / attack.RESULTS_FILE
        data[method] = read_json(srcs[method])
    rob_cfg = {"inputs": [ctx.rel(runs[m]) for m in methods]}
    rob_dir = ctx.cached("robustness", rob_cfg, lambda d: robustness.run(robustness.Config(
        inputs=[runs[m] for m in methods], out=d, **ctx.common)))
    rob_src = rob_dir / "robustness.json"
    rob = read_json(rob_src)

    first = data[methods[0]]
    parts = [
        "<p>A targeted attack changes a photo, within an L<sub>∞</sub> budget ε per pixel, until the network "
        f"(<b>{esc(first['model'])}</b>) gives a chosen target class. The attack works on the photo at its own "
        "resolution (the model's resize and crop are part of the differentiable pipeline); the result is quantized "
        "to 8 bits and the saved PNG itself is re-checked. The classic rule is gradient ascent on the target's "
        "probability,</p>",
        ctx.tex(r"X' \leftarrow \operatorname{clip}_{[X-\varepsilon,\,X+\varepsilon]\cap[0,1]}"
                r"\Big(X' + \lambda\,\frac{\partial P(y_{\text{fool}}\mid X')}{\partial X'}\Big),", display=True),
        "<p>projected gradient descent (PGD) takes signed steps on the log-probability instead, and Expectation "
        "over Transformation (EOT) averages the gradient over random flips, crops, rotations, grayscale and "
        "rescaling so that the result survives them.</p>",
    ]
    for method in methods:
        d, src = data[method], srcs[method]

        def N(key, path, spec, method=method, d=d, src=src):
            value = d
            for k in path:
                value = value[k]
            return ctx.num(f"{method}.{key}", value, spec, src, path)

        n_ok = sum(im["success"] for im in d["images"])
        rows = "".join(
            f"<tr><td>{esc(im['name'])}</td><td>{esc(im['clean_name'])} ({N(f'clean{i}', ['images', i, 'clean_prob'], '.1%')})</td>"
            f"<td>{esc(im['target_name'])}</td><td>{esc(im['adv_name'])} ({N(f'adv{i}', ['images', i, 'adv_prob'], '.1%')})</td>"
            f"<td>{N(f'pt{i}', ['images', i, 'p_target'], '.3f')}</td><td>{N(f'linf{i}', ['images', i, 'linf_grey'], 'int')}/255</td>"
            f"<td>{N(f'psnr{i}', ['images', i, 'psnr'], '.1f')}</td><td>{N(f'ssim{i}', ['images', i, 'ssim'], '.4f')}</td>"
            f"<td>{N(f'steps{i}', ['images', i, 'steps'], 'int')}</td><td>{N(f'sec{i}', ['images', i, 'seconds'], '.1f')}</td>"
            f"<td>{'yes' if im['success'] else '<b>no</b>'}</td></tr>" for i, im in enumerate(d["images"]))
        parts += [
            f"<h3>{esc(method)}</h3><p>ε = ", N("eps_grey", ["eps_grey"], "g"), " grey levels (of 255), step budget ",
            N("budget", ["steps_budget"], "int"), ", success when P(target) on the saved 8-bit image reaches ",
            N("thr", ["threshold"], "g"), ". ",
            ctx.derived(f"{method}.n_success", n_ok, "int", "images with success"), " of ",
            ctx.derived(f"{method}.n_images", len(d["images"]), "int", "images attacked"), " images reached the target.</p>",
            '<div class="table-wrap"><table><thead><tr><th>image</th><th>clean top-1</th><th>target</th>'
            "<th>adversarial top-1</th><th>P(target)</th><th>L∞</th><th>PSNR (dB)</th><th>SSIM</th><th>steps</th>"
            f"<th>seconds</th><th>success</th></tr></thead><tbody>{rows}</tbody></table></div>",
            ctx.figure(runs[method] / d["figure"], f"{esc(method)}: original (class and probability), the noise "
                       "(amplified ×" + N("amp", ["amplify"], ".0f") + " for display) and the adversarial image.", wide=True),
        ]
        for w in d.get("warnings", []):
            parts.append(f'<p class="muted">Warning: {esc(w)}</p>')

    # --- robustness
    transforms = rob["transforms"][1:]  # the first is the untransformed image
    parts.append("<h3>Do they survive image transforms?</h3>")
    parts.append(ctx.figure(rob_dir / "robustness.png", "Each adversarial image after a horizontal flip, a centre "
                            "crop, a rotation and grayscale, titled with the new top-1 and its probability.", wide=True))
    head = "".join(f"<th>{esc(t)}</th>" for t in transforms)
    body = []
    survived: dict[str, list[bool]] = {m: [] for m in methods}
    for label, summary in rob["summary"].items():
        cells = []
        for t in transforms:
            i = next(j for j, r in enumerate(rob["rows"]) if r["label"] == label and r["transform"] == t)
            ok = rob["rows"][i]["target_survives"]
            method = label.split(":")[0]
            survived.setdefault(method, []).append(ok)
            cells.append(f"<td>{'✔' if ok else '✘'} " + ctx.num(f"pt.{label}.{t}", rob["rows"][i]["p_target"], ".2f",
                                                                 rob_src, ["rows", i, "p_target"]) + "</td>")
        body.append(f"<tr><td>{esc(label)}</td>{''.join(cells)}</tr>")
    parts.append('<div class="table-wrap"><table><thead><tr><th>adversarial image</th>' + head + "</tr></thead><tbody>"
                 + "".join(body) + "</tbody></table></div><p class=\"muted\">✔: the target is still the top-1 class "
                 "after the transform; the number is P(target).</p>")
    rates = {m: sum(v) / len(v) for m, v in survived.items() if v}
    sentences = [f"<code>{esc(m)}</code> keeps the target in "
                 + ctx.derived(f"survival.{m}", rate, ".0%", f"transformed {m} images whose top-1 is still the target")
                 + " of the transformed images" for m, rate in rates.items()]
    discussion = "; ".join(sentences) + "."
    plain = [rates[m] for m in rates if m != "eot"]
    if "eot" in rates and plain:
        if rates["eot"] > max(plain):
            discussion += (" EOT adversarials survive the transforms more often than the plain ones: the plain "
                           "attacks find noise tuned to one exact view of the image, which a flip or a crop moves off "
                           "the pixels it was tuned for, while EOT optimized the expected target probability over "
                           "such transforms.")
        else:
            discussion += " Here EOT did <b>not</b> survive the transforms more often than the plain attacks."
    parts.append(f"<p>{discussion} Adversarial noise of a few grey levels is invisible yet changes the decision: "
                 "the network's decision boundaries lie very close to natural images in pixel space.</p>")
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec
