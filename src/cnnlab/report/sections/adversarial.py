"""Section: targeted adversarial examples and whether they survive image transforms
(``cnnlab attack`` and ``cnnlab robustness``).

Shown by ``templates/sections/adversarial.html.j2``. Each method's numbers are recorded as
``<method>.<key>`` from its ``attack.json``; the robustness tables read ``robustness.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import SectionContext, SectionData
from cnnlab.runs import read_json

ID = "adversarial"
TITLE = "Adversarial examples"
SOURCES = ("cnnlab.attacks.base", "cnnlab.attacks.ascent", "cnnlab.attacks.pgd", "cnnlab.attacks.eot",
           "cnnlab.attacks.transforms", "cnnlab.attacks.run", "cnnlab.attacks.robustness")
SWEPT = ("pgd", "eot")  # the methods attacked again per ε and with random targets
BREAKS = {"flip": "mirroring moves every pixel of the noise to the other side of the image",
          "crop": "the crop and its resize shift and rescale the noise against the pixel grid",
          "rotate": "the rotation resamples the noise between pixels and blurs it",
          "grayscale": "grayscale removes the colour part of the noise, the larger part of it"}


@dataclass
class AttackPlan:
    """The profile's attack options: the methods, the photos (empty: the attack's default photos,
    peppers and three built-in ones), the ε sweep in grey levels, and the options for ``cnnlab attack``."""

    methods: list[str]
    images: list[str]
    sweep: tuple[float, ...]
    options: dict[str, Any]
    per_method: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, ctx: SectionContext) -> AttackPlan:
        opts = dict(ctx.profile.attack)
        n_images = opts.pop("images", None)
        images = []
        if n_images is not None:  # the smoke profile: the report's photo only
            images = [str(report_photo(ctx.data_root, ctx.work, ctx.photo)[0])][:n_images]
        return cls(methods=list(opts.pop("methods", ("pgd",))), images=images, sweep=tuple(opts.pop("sweep_eps", ())),
                   per_method=opts.pop("per_method", {}), options=opts)

    def swept(self) -> list[str]:
        return [m for m in self.methods if m in SWEPT]


def _attack_defaults(method: str, images: list[str]) -> dict[str, Any]:
    """What decides an attack's result besides its config: the method's default options (steps,
    step size, EOT's stopping rule...) and, for the default photos, their targets. Part of the
    cache key, so a changed default attacks anew instead of reusing an old run."""
    from cnnlab.attacks import ATTACKS
    from cnnlab.attacks.targets import default_targets

    return {"options": asdict(ATTACKS.get(method).default_options),
            "targets": default_targets() if not images else None}


def _attack_run(ctx: SectionContext, plan: AttackPlan, method: str, name: str, **extra: Any) -> Path:
    """The run folder of ``cnnlab attack`` with ``method`` on the plan's photos (``extra`` overrides options)."""
    import cnnlab.attacks.run as attack

    cfg = {"method": method, "images": plan.images, **plan.options, **plan.per_method.get(method, {}), **extra}
    return ctx.cached(name, {**cfg, "defaults": _attack_defaults(method, plan.images)},
                      lambda d: attack.run(attack.Config(out=d, **cfg, **ctx.common)))


def _robustness_run(ctx: SectionContext, name: str, run_dirs: list[Path]) -> tuple[dict, Path]:
    """``cnnlab robustness`` on the attack runs ``run_dirs``: its results and their file."""
    import cnnlab.attacks.robustness as robustness

    out = ctx.cached(name, {"inputs": [ctx.rel(d) for d in run_dirs]}, lambda d: robustness.run(
        robustness.Config(inputs=list(run_dirs), out=d, **ctx.common)))
    return read_json(out / "robustness.json"), out / "robustness.json"


def _method_of(label: str) -> str:
    """The attack method of a robustness row's label ("eot 2/255: peppers" -> eot)."""
    return label.split(":")[0].split()[0]


def collect(ctx: SectionContext) -> SectionData:
    import cnnlab.attacks.run as attack

    plan = AttackPlan.of(ctx)
    runs = {m: _attack_run(ctx, plan, m, f"attack-{m}") for m in plan.methods}
    rob, rob_src = _robustness_run(ctx, "robustness", [runs[m] for m in plan.methods])
    methods = [_method(ctx, m, runs[m], runs[m] / attack.RESULTS_FILE) for m in plan.methods]
    return SectionData(
        model=methods[0].model, chosen_targets=not plan.images, methods=methods,
        robustness=_survival(ctx, plan.methods, rob, rob_src),
        price=_price_of_robustness(ctx, plan, runs) if plan.sweep else None,
        random=_random_targets(ctx, plan, rob) if not plan.images else None)


def _method(ctx: SectionContext, method: str, run_dir: Path, src: Path) -> SectionData:
    """One method's settings, its per-image table and its figure."""
    d = read_json(src)
    N = ctx.reader(src, d, prefix=f"{method}.")
    rows = [SectionData(
        name=im["name"], clean_name=im["clean_name"], target_name=im["target_name"], adv_name=im["adv_name"],
        clean=N(f"clean{i}", ["images", i, "clean_prob"], ".1%"), adv=N(f"adv{i}", ["images", i, "adv_prob"], ".1%"),
        p_target=N(f"pt{i}", ["images", i, "p_target"], ".3f"), linf=N(f"linf{i}", ["images", i, "linf_grey"], "int"),
        psnr=N(f"psnr{i}", ["images", i, "psnr"], ".1f"), ssim=N(f"ssim{i}", ["images", i, "ssim"], ".4f"),
        steps=N(f"steps{i}", ["images", i, "steps"], "int"), seconds=N(f"sec{i}", ["images", i, "seconds"], ".1f"),
        success=im["success"]) for i, im in enumerate(d["images"])]
    return SectionData(
        name=method, model=d["model"], rows=rows, eps=N("eps_grey", ["eps_grey"], "g"),
        budget=N("budget", ["steps_budget"], "int"), threshold=N("thr", ["threshold"], "g"),
        n_success=ctx.derived(f"{method}.n_success", sum(im["success"] for im in d["images"]), "int",
                              "images with success"),
        n_images=ctx.derived(f"{method}.n_images", len(d["images"]), "int", "images attacked"),
        amplify=N("amp", ["amplify"], ".0f"), figure=ctx.figure(run_dir / d["figure"], wide=True),
        warnings=d.get("warnings", []))


def _survival(ctx: SectionContext, methods: list[str], rob: dict, src: Path) -> SectionData:
    """Whether each adversarial image keeps its target under each transform, and the share per method."""
    R = ctx.reader(src, rob)
    transforms = rob["transforms"][1:]  # the first is the untransformed image
    pages = [ctx.figure(src.parent / page, wide=True) for page in rob.get("pages") or ["robustness.png"]]
    rows, survived = [], {m: [] for m in methods}
    for label in rob["summary"]:
        cells = []
        for t in transforms:
            i = next(j for j, r in enumerate(rob["rows"]) if r["label"] == label and r["transform"] == t)
            ok = rob["rows"][i]["target_survives"]
            survived.setdefault(_method_of(label), []).append(ok)
            cells.append(SectionData(survives=ok, p_target=R(f"pt.{label}.{t}", ["rows", i, "p_target"], ".2f")))
        rows.append(SectionData(label=label, cells=cells))
    rates = {m: sum(v) / len(v) for m, v in survived.items() if v}
    plain = [rates[m] for m in rates if m != "eot"]
    return SectionData(
        transforms=transforms, pages=pages, rows=rows,
        rates=[SectionData(method=m, rate=ctx.derived(f"survival.{m}", rate, ".0%",
                                                      f"transformed {m} images whose top-1 is still the target"))
               for m, rate in rates.items()],
        eot_survives_more=rates["eot"] > max(plain) if "eot" in rates and plain else None)


def _price_of_robustness(ctx: SectionContext, plan: AttackPlan, runs: dict[str, Path]) -> SectionData:
    """Survival under all four transforms against ε for pgd and eot: a plot, the smallest ε per
    photo, and which transform breaks the plain attack, from the numbers."""
    main_eps = round(plan.options.get("eps", 2 / 255) * 255, 6)
    dirs = [runs[m] if e == main_eps else _attack_run(ctx, plan, m, f"attack-{m}-eps{e:g}", eps=e / 255)
            for m in plan.swept() for e in plan.sweep]
    rob, src = _robustness_run(ctx, "robustness-eps", dirs)
    R = ctx.reader(src, rob)
    photos = sorted({p for v in rob["min_eps"].values() for p in v})
    rows = [SectionData(photo=p, cells=[R(f"mineps.{m}.{p}", ["min_eps", m, p], "g") if v.get(p) is not None else None
                                        for m, v in rob["min_eps"].items()]) for p in photos]
    figure = rob.get("survival_figure")
    return SectionData(figure=ctx.figure(src.parent / figure) if figure else None, methods=list(rob["min_eps"]),
                       rows=rows, largest=f"{max(plan.sweep):g}", why=_why_transforms_break(ctx, rob))


def _why_transforms_break(ctx: SectionContext, rob: dict) -> SectionData:
    """Per method and transform, the share of images whose target survives, over every ε tried;
    the transforms the plain attack loses most often, and those EOT keeps more often."""
    share: dict[str, dict[str, list[bool]]] = {}
    for r in rob["rows"]:
        share.setdefault(_method_of(r["label"]), {}).setdefault(r["transform"], []).append(bool(r["target_survives"]))
    rates = {m: {t: sum(v) / len(v) for t, v in by.items() if t != rob["transforms"][0]} for m, by in share.items()}
    survive = [SectionData(method=m, transforms=[
        SectionData(name=t, rate=ctx.derived(f"survive.{m}.{t}", v, ".0%", f"{m} images over all ε surviving {t}"))
        for t, v in by.items()]) for m, by in rates.items()]
    worst, eot_better = [], []
    if "pgd" in rates:
        pgd = rates["pgd"]
        order = sorted(pgd, key=pgd.get)
        worst = [SectionData(name=t, reason=BREAKS.get(t, "")) for t in order if pgd[t] == pgd[order[0]]]
        if "eot" in rates:
            eot_better = [t for t in order if rates["eot"].get(t, 0) > pgd[t]]
    return SectionData(survive=survive, pgd_worst=worst, eot_better=eot_better)


def _random_targets(ctx: SectionContext, plan: AttackPlan, rob: dict) -> SectionData:
    """The default photos again with targets drawn at random by the seed, beside the chosen ones."""
    dirs = [_attack_run(ctx, plan, m, f"attack-{m}-random", target=["random"]) for m in plan.swept()]
    rob_rand, src = _robustness_run(ctx, "robustness-random", dirs)
    rows = []
    for label, s in rob_rand["summary"].items():
        method, photo = _method_of(label), label.split(":", 1)[1].strip()
        chosen = {lab.split(":", 1)[1].strip(): v["all_four"] for lab, v in rob["summary"].items()
                  if _method_of(lab) == method}
        row = next(r for r in rob_rand["rows"] if r["label"] == label)
        rows.append(SectionData(method=method, photo=photo, chosen_survives=bool(chosen.get(photo)),
                                target_name=row["target_name"], random_survives=bool(s["all_four"])))
    return SectionData(
        rows=rows, source=ctx.rel(src),
        n_all_four=ctx.derived("random.n_all_four", sum(bool(s["all_four"]) for s in rob_rand["summary"].values()),
                               "int", "random-target adversarials surviving all four transforms"),
        n=ctx.derived("random.n", len(rob_rand["summary"]), "int", "random-target adversarials"))
