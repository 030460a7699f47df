"""Section: early, middle and late feature maps, what their channels are tuned to over an image
set, and how class-selective each layer is (``cnnlab featuremaps``).

Shown by ``templates/sections/featuremaps.html.j2``. Every per-layer number is read from the
run's ``featuremaps.json`` under ``stages/<i>`` and recorded as ``<stage>.<key>``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import Num, SectionContext, SectionData
from cnnlab.runs import read_json

ID = "featuremaps"
TITLE = "Feature maps: early, middle and late layers"
SOURCES = ("cnnlab.featuremaps.run", "cnnlab.featuremaps.extract", "cnnlab.featuremaps.select",
           "cnnlab.featuremaps.analysis", "cnnlab.featuremaps.tuning", "cnnlab.featuremaps.receptive",
           "cnnlab.featuremaps.selectivity", "cnnlab.featuremaps.imageset", "cnnlab.plots.featuremaps")
STAGES = ("early", "middle", "late")

Reader = Callable[..., Num]


def _run(ctx: SectionContext) -> tuple[Path, Path]:
    """The photo and the featuremaps run folder (over a synthetic labelled set in the smoke profile)."""
    import cnnlab.featuremaps.run as fm

    photo, _ = report_photo(ctx.data_root, ctx.work, ctx.photo)
    opts = dict(ctx.profile.featuremaps)
    if ctx.profile.synthetic:  # a made-up labelled set: coloured shapes, one colour per class
        from cnnlab.report.synthetic import image_folder

        folder = image_folder(ctx.work / "inputs" / "featuremaps-set", classes=opts.pop("classes", 3),
                              per_class=opts.pop("images_per_class", 6))
        opts.update(dataset=str(folder.resolve()), builtin_photos=False)
    elif ctx.data_root is not None:
        opts["data_root"] = str(ctx.data_root)
    cfg = {"image": str(photo), "model": "mobilenet_v2", **opts}
    run_dir = ctx.cached("featuremaps", cfg, lambda d: fm.run(fm.Config(
        image=photo, out=d, cache_dir=ctx.work / "feature-cache", **{k: v for k, v in cfg.items() if k != "image"},
        **ctx.common)))
    return photo, run_dir


def collect(ctx: SectionContext) -> SectionData:
    photo, run_dir = _run(ctx)
    src = run_dir / "featuremaps.json"
    data = read_json(src)
    stages = {s["stage"]: s for s in data["stages"]}
    index = {s["stage"]: i for i, s in enumerate(data["stages"])}
    N = {st: ctx.reader(src, data, prefix=f"{st}.", base=["stages", index[st]]) for st in STAGES}
    by_score = data.get("select", "score") == "score"
    return SectionData(
        model=data["model"], photo_name=photo.name, n_blocks=ctx.reader(src, data)("n_blocks", ["n_blocks"], "int"),
        score_definition=data["score_definition"] if by_score else None,
        rows=[_layer_row(stages[st], N[st]) for st in STAGES],
        maps=[SectionData(stage=st, layer=stages[st]["layer"], n_channels=len(stages[st]["channels"]),
                          figure=ctx.figure(run_dir / data["figures"][st], wide=True)) for st in STAGES],
        tuning=_tuning(ctx, data, stages, run_dir, src, N) if data.get("image_set") else None,
        discussion=_discussion(ctx, data, stages, N))


def _layer_row(s: dict[str, Any], N: Reader) -> SectionData:
    """One layer's row of the table: where it sits, its shape, its receptive field, the channels shown."""
    return SectionData(
        stage=s["stage"], layer=s["layer"],
        channels=[SectionData(channel=c["channel"], score=N(f"score{j}", ["channels", j, "score"], ".2f"))
                  for j, c in enumerate(s["channels"])],
        rf=N("rf", ["receptive_field", "size", 0], "g") if s.get("receptive_field") else None,
        depth=N("depth", ["depth"], "int"), frac=N("frac", ["depth_fraction"], ".0%"),
        C=N("C", ["shape", 0], "int"), H=N("H", ["shape", 1], "int"), W=N("W", ["shape", 2], "int"),
        dead=N("dead", ["dead_channels"], "int"))


def _tuning(ctx: SectionContext, data: dict, stages: dict, run_dir: Path, src: Path,
            N: dict[str, Reader]) -> SectionData:
    """The image-set part: top patches per channel and the selectivity of each layer."""
    iset = data["image_set"]
    S = ctx.reader(src, data, base=["image_set"])
    figures = [(st, data["figures"].get(f"tuning_{st}")) for st in STAGES]
    selectivity = data.get("chance") and all(stages[st].get("set_summary") for st in STAGES)
    return SectionData(
        k=S("k", ["k"], "int"), name=iset["name"], images=S("set_n", ["images"], "int"),
        labelled=S("set_lab", ["labelled"], "int"), classes=S("set_cls", ["classes"], "int"),
        cap=S("cap", ["max_per_class"], "int") if iset.get("max_per_class") else None,
        figures=[SectionData(stage=st, layer=stages[st]["layer"], figure=ctx.figure(run_dir / name, wide=True))
                 for st, name in figures if name],
        selectivity=_selectivity(ctx, data, run_dir, src, N) if selectivity else None)


def _selectivity(ctx: SectionContext, data: dict, run_dir: Path, src: Path, N: dict[str, Reader]) -> SectionData:
    """Per layer: live channels, mean selectivity and top-class share, selective and mixed channels,
    against the share that random draws of as many images reach."""
    p = ["set_summary"]
    rows = [SectionData(stage=st, alive=N[st]("alive", [*p, "alive"], "int"), channels=N[st]("chan", [*p, "channels"], "int"),
                        mean_selectivity=N[st]("msel", [*p, "mean_selectivity"], ".2f"),
                        mean_top_share=N[st]("share", [*p, "mean_top_share"], ".2f"),
                        selective=N[st]("nsel", [*p, "selective"], "int"),
                        selective_fraction=N[st]("fsel", [*p, "selective_fraction"], ".0%"),
                        mixed=N[st]("mixed", [*p, "mixed"], "int")) for st in STAGES]
    C = ctx.reader(src, data, base=["chance"])
    has_threshold = data["chance"]["top_share_threshold"] is not None
    figure = data["figures"].get("selectivity")
    return SectionData(rows=rows, alpha=C("alpha", ["alpha"], ".0%"), chance=C("chance", ["mean_top_share"], ".2f"),
                       threshold=C("thr", ["top_share_threshold"], ".2f") if has_threshold else None,
                       figure=ctx.figure(run_dir / figure) if figure else None)


def _discussion(ctx: SectionContext, data: dict, stages: dict, N: dict[str, Reader]) -> SectionData:
    """The claims the numbers support, each present only when its numbers hold."""
    e, m, l = (stages[s] for s in STAGES)
    resolution = _resolution(ctx, e, l, N) if e["shape"][1] > l["shape"][1] else None
    selectivity = (_selectivity_claims(ctx, data, stages, N)
                   if all(s.get("set_summary") for s in (e, m, l)) else None)
    sparse = None
    if l["dead_channels"] > e["dead_channels"]:
        sparse = SectionData(late=N["late"]("dead2", ["dead_channels"], "int"),
                             late_frac=ctx.derived("late_dead_frac", l["dead_channels"] / l["shape"][0], ".1%",
                                                   "late dead channels / late channels"),
                             early=N["early"]("dead2", ["dead_channels"], "int"))
    shown = ctx.derived("late_shown_frac", len(l["channels"]) / l["shape"][0], ".1%", "channels shown / late channels")
    return SectionData(resolution=resolution, selectivity=selectivity, sparse=sparse, late_shown=shown)


def _resolution(ctx: SectionContext, early: dict, late: dict, N: dict[str, Reader]) -> SectionData:
    """Early and late map sizes, how much wider a late pixel is, and the late receptive field."""
    E, L = N["early"], N["late"]
    shape = SectionData(
        eH=E("H2", ["shape", 1], "int"), eW=E("W2", ["shape", 2], "int"), eC=E("C2", ["shape", 0], "int"),
        lH=L("H2", ["shape", 1], "int"), lW=L("W2", ["shape", 2], "int"), lC=L("C2", ["shape", 0], "int"),
        ratio=ctx.derived("late_vs_early_pixel", early["shape"][1] / late["shape"][1], "g",
                          "early height / late height"))
    rf = late.get("receptive_field")
    shape.field = SectionData(size=L("rf2", ["receptive_field", "size", 0], "g"),
                              crop=L("crop", ["receptive_field", "crop", 0], "int"),
                              wider=rf["size"][0] >= rf["crop"][0]) if rf else None
    return shape


def _selectivity_claims(ctx: SectionContext, data: dict, stages: dict, N: dict[str, Reader]) -> SectionData:
    """How selectivity changes with depth, against chance, and how many channels are mixed."""
    summary = [stages[s]["set_summary"] for s in STAGES]
    sel = [s["mean_selectivity"] for s in summary]
    mixed = [s["mixed"] / max(s["alive"], 1) for s in summary]
    trend = ("grows with depth" if sel[0] < sel[1] < sel[2] else
             "is higher late than early, though not steadily" if sel[2] > sel[0] else "does not grow with depth here")
    means = [SectionData(stage=s, value=N[s]("msel", ["set_summary", "mean_selectivity"], ".2f")) for s in STAGES]
    fields = None
    if all(stages[s].get("receptive_field") for s in STAGES):
        fields = SectionData(early=N["early"]("rf", ["receptive_field", "size", 0], "g"),
                             late=N["late"]("rf", ["receptive_field", "size", 0], "g"))
    expected = ctx.derived("late_expected_selective", data["chance"]["alpha"] * summary[2]["alive"], ".0f",
                           "alpha × live late channels")
    selective = N["late"]("nsel", ["set_summary", "selective"], "int")
    mixed_fracs = [SectionData(stage=s, value=ctx.derived(f"{s}_mixed_frac", mixed[i], ".0%", f"{s} mixed / live channels"))
                   for i, s in enumerate(STAGES)]
    where = ("In every layer most channels are" if min(mixed) > 0.5 else "In some layers most channels are"
             if max(mixed) > 0.5 else "In every layer a minority of channels is")
    late = stages["late"]["channels"]
    shown = None
    if late and late[0].get("top_class") is not None:
        picks = [c for c in late if c.get("selective")]
        shown = SectionData(selective=len(picks), of=len(late), classes=sorted({c["top_class"] for c in picks}))
    return SectionData(trend=trend, means=means, fields=fields, expected=expected, selective=selective,
                       mixed=mixed_fracs, where=where, shown=shown)
