"""Section: targeted adversarial examples and whether they survive image transforms
(``cnnlab attack`` and ``cnnlab robustness``)."""

from __future__ import annotations

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import HtmlSectionContext as Context, Section, esc
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
    sweep = tuple(opts.pop("sweep_eps", ()))  # ε in grey levels for the price-of-robustness runs
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

    def attack_run(method: str, name: str, **extra) -> Path:
        cfg = {"method": method, "images": images, **opts, **per_method.get(method, {}), **extra}
        return ctx.cached(name, {**cfg, "identity": _identity(method, images)},
                          lambda d, cfg=cfg: attack.run(attack.Config(out=d, **cfg, **ctx.common)))

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
        "over Transformation (EOT) ascends, at every step, a capped margin of the target under the plain image, "
        "the four test transforms (flip, a centre crop to four fifths of the side, 30° rotation, grayscale) and jittered copies of them, so that "
        "the result survives them.</p>",
        "<p>The targets of the default photos were <b>chosen</b>: peppers → space shuttle is required, the other "
        "three were picked by trial (<code>benchmarks/RESULTS.md</code>), which flatters any attack. "
        "The numbers for targets drawn at random (a fixed seed, outside each photo's clean top-5) are shown "
        "beside them below.</p>" if not images else "",
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
    pages = rob.get("pages") or ["robustness.png"]
    for k, page in enumerate(pages):
        parts.append(ctx.figure(rob_dir / page, "Each adversarial image after a horizontal flip, a centre crop, a "
                                "rotation and grayscale, titled with the new top-1 and its probability"
                                + (f" (part {k + 1} of {len(pages)})." if len(pages) > 1 else "."), wide=True))
    head = "".join(f"<th>{esc(t)}</th>" for t in transforms)
    body = []
    survived: dict[str, list[bool]] = {m: [] for m in methods}
    for label, summary in rob["summary"].items():
        cells = []
        for t in transforms:
            i = next(j for j, r in enumerate(rob["rows"]) if r["label"] == label and r["transform"] == t)
            ok = rob["rows"][i]["target_survives"]
            method = label.split(":")[0].split()[0]  # "eot 2/255: peppers" -> eot
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
    if sweep:
        parts += _price_of_robustness(ctx, [m for m in methods if m in ("pgd", "eot")], sweep, opts, attack_run, runs)
    if not images:
        parts += _random_targets(ctx, [m for m in methods if m in ("pgd", "eot")], rob, attack_run)
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec


def _robustness_run(ctx: Context, name: str, run_dirs: list) -> tuple[dict, Path]:
    import cnnlab.attacks.robustness as robustness

    out = ctx.cached(name, {"inputs": [ctx.rel(d) for d in run_dirs]}, lambda d: robustness.run(
        robustness.Config(inputs=list(run_dirs), out=d, **ctx.common)))
    return read_json(out / "robustness.json"), out


def _price_of_robustness(ctx: Context, methods: list[str], sweep: tuple, opts: dict, attack_run, runs: dict) -> list[str]:
    """Survival under all four transforms against ε for pgd and eot: a plot, the smallest ε per
    photo, and which transform breaks the plain attack, from the numbers."""
    main_eps = round(opts.get("eps", 2 / 255) * 255, 6)
    dirs = [runs[m] if e == main_eps else attack_run(m, f"attack-{m}-eps{e:g}", eps=e / 255)
            for m in methods for e in sweep]
    rob, out = _robustness_run(ctx, "robustness-eps", dirs)
    src = out / "robustness.json"
    parts = ["<h3>The price of robustness</h3>"]
    if rob.get("survival_figure"):
        parts.append(ctx.figure(out / rob["survival_figure"], "Photos whose target is still top-1 after each of the "
                                "four transforms, against the budget ε (grey levels of 255)."))
    head = "".join(f"<th>{esc(m)}</th>" for m in rob["min_eps"])
    photos = sorted({p for v in rob["min_eps"].values() for p in v})
    body = "".join(f"<tr><td>{esc(p)}</td>" + "".join(
        "<td>" + (ctx.num(f"mineps.{m}.{p}", v[p], "g", src, ["min_eps", m, p]) + "/255" if v.get(p) is not None
                  else f"&gt; {max(sweep):g}/255") + "</td>" for m, v in rob["min_eps"].items()) + "</tr>" for p in photos)
    parts.append('<div class="table-wrap"><table><thead><tr><th>photo: smallest ε surviving all four</th>' + head
                 + f"</tr></thead><tbody>{body}</tbody></table></div>")
    parts.append(f"<p>{_why_transforms_break(ctx, rob, src)}</p>")
    return parts


def _why_transforms_break(ctx: Context, rob: dict, src: Path) -> str:
    """Per method and transform, the share of images whose target survives, over every ε tried,
    and the sentence that names the transforms the plain attack loses most often."""
    share: dict[str, dict[str, list[bool]]] = {}
    for r in rob["rows"]:
        method = r["label"].split(":")[0].split()[0]
        share.setdefault(method, {}).setdefault(r["transform"], []).append(bool(r["target_survives"]))
    rates = {m: {t: sum(v) / len(v) for t, v in by.items() if t != rob["transforms"][0]} for m, by in share.items()}
    text = []
    for m, by in rates.items():
        text.append(f"Over every ε, <code>{esc(m)}</code> keeps the target under " + ", ".join(
            f"{esc(t)} in " + ctx.derived(f"survive.{m}.{t}", v, ".0%", f"{m} images over all ε surviving {t}")
            for t, v in by.items()) + " of the images.")
    if "pgd" in rates:
        order = sorted(rates["pgd"], key=rates["pgd"].get)
        worst = [t for t in order if rates["pgd"][t] == rates["pgd"][order[0]]]
        reasons = {"flip": "mirroring moves every pixel of the noise to the other side of the image",
                   "crop": "the crop and its resize shift and rescale the noise against the pixel grid",
                   "rotate": "the rotation resamples the noise between pixels and blurs it",
                   "grayscale": "grayscale removes the colour part of the noise, the larger part of it"}
        text.append("PGD's noise is tuned to one exact view of the photo; it breaks most often under "
                    + " and ".join(esc(t) for t in worst) + ": " + "; ".join(reasons.get(t, "") for t in worst) + ".")
        if "eot" in rates:
            better = [t for t in order if rates["eot"].get(t, 0) > rates["pgd"][t]]
            if better:
                text.append("EOT, which optimizes these views directly, keeps the target more often under "
                            + ", ".join(esc(t) for t in better) + ".")
    return " ".join(text)


def _random_targets(ctx: Context, methods: list[str], rob: dict, attack_run) -> list[str]:
    """The default photos again with targets drawn at random by the seed, beside the chosen ones."""
    dirs = [attack_run(m, f"attack-{m}-random", target=["random"]) for m in methods]
    rob_rand, out = _robustness_run(ctx, "robustness-random", dirs)
    src = out / "robustness.json"
    rows = []
    for label, s in rob_rand["summary"].items():
        method, photo = label.split(":")[0].split()[0], label.split(":", 1)[1].strip()
        row = next(r for r in rob_rand["rows"] if r["label"] == label)
        mine = {lab.split(":", 1)[1].strip(): v["all_four"] for lab, v in rob["summary"].items()
                if lab.split(":")[0].split()[0] == method}
        rows.append(f"<tr><td>{esc(method)}</td><td>{esc(photo)}</td><td>{'✔' if mine.get(photo) else '✘'}</td>"
                    f"<td>{esc(row['target_name'])}</td><td>{'✔' if s['all_four'] else '✘'}</td></tr>")
    return ["<h3>Chosen and random targets</h3>",
            '<div class="table-wrap"><table><thead><tr><th>method</th><th>photo</th><th>chosen target: survives all '
            "four</th><th>random target</th><th>random target: survives all four</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table></div>",
            "<p>" + ctx.derived("random.n_all_four", sum(bool(s["all_four"]) for s in rob_rand["summary"].values()), "int",
                        "random-target adversarials surviving all four transforms")
            + " of " + ctx.derived("random.n", len(rob_rand["summary"]), "int", "random-target adversarials")
            + f' random-target adversarials survive all four transforms (<code>{esc(ctx.rel(src))}</code>).</p>']
