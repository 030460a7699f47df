"""Section: early, middle and late feature maps, what their channels are tuned to over an image
set, and how class-selective each layer is (``cnnlab featuremaps``)."""

from __future__ import annotations

from statistics import mean

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import HtmlSectionContext as Context, Section, esc
from cnnlab.runs import read_json

ID = "featuremaps"
TITLE = "Feature maps: early, middle and late layers"
SOURCES = ("cnnlab.featuremaps.run", "cnnlab.featuremaps.extract", "cnnlab.featuremaps.select",
           "cnnlab.featuremaps.analysis", "cnnlab.featuremaps.tuning", "cnnlab.featuremaps.receptive",
           "cnnlab.featuremaps.selectivity", "cnnlab.featuremaps.imageset", "cnnlab.plots.featuremaps")
STAGES = ("early", "middle", "late")


def _run(ctx: Context):
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


def build(ctx: Context) -> Section:
    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    photo, run_dir = _run(ctx)
    src = run_dir / "featuremaps.json"
    data = read_json(src)
    stages = {s["stage"]: s for s in data["stages"]}
    idx = {s["stage"]: i for i, s in enumerate(data["stages"])}

    def N(key, stage, path, spec):
        value = stages[stage]
        for k in path:
            value = value[k]
        return ctx.num(f"{stage}.{key}", value, spec, src, ["stages", idx[stage], *path])

    rule = (f"<i>{esc(data['score_definition'])}</i>" if data.get("select", "score") == "score" else
            "the channels that are alive on this photo (not constant) and, among them, the most class-selective "
            "over the image set described below, at most one per preferred class while channels of other classes "
            "remain; near-duplicates on the photo are skipped")
    parts = [f"<p>Feature maps of <b>{esc(data['model'])}</b> on <code>{esc(photo.name)}</code>. The three layers "
             "are picked from the network's traced graph at the start, the middle and the end of its ",
             ctx.num("n_blocks", data["n_blocks"], "int", src, ["n_blocks"]),
             f" blocks; in each, the channels shown are {rule}. Each map is normalized to [0, 1] on its own; beside "
             "it, the map is upsampled (bilinear) to the 224×224 crop the network saw and laid over it, so that it "
             "shows where on the photo the channel fires.</p>", _table(ctx, stages, N)]
    for stage in STAGES:
        s = stages[stage]
        parts.append(ctx.figure(run_dir / data["figures"][stage], f"{stage.capitalize()} layer "
                                f"<code>{esc(s['layer'])}</code>: {len(s['channels'])} channels, each normalized to "
                                "[0, 1], and below each the same map on the photo.", wide=True))
    if data.get("image_set"):
        parts += _tuning(ctx, data, stages, run_dir, src, N)
    parts.append("<h3>What they show</h3><ul>" + "".join(_discussion(ctx, data, stages, N)) + "</ul>")
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec


def _table(ctx: Context, stages: dict, N) -> str:
    rows = []
    for stage in STAGES:
        s = stages[stage]
        chans = ", ".join(f"{c['channel']} ({N(f'score{j}', stage, ['channels', j, 'score'], '.2f')})"
                          for j, c in enumerate(s["channels"]))
        rf = N("rf", stage, ["receptive_field", "size", 0], "g") + " px" if s.get("receptive_field") else "–"
        rows.append(f"<tr><td>{stage}</td><td><code>{esc(s['layer'])}</code></td>"
                    f"<td>{N('depth', stage, ['depth'], 'int')} ({N('frac', stage, ['depth_fraction'], '.0%')})</td>"
                    f"<td>{N('C', stage, ['shape', 0], 'int')}×{N('H', stage, ['shape', 1], 'int')}×"
                    f"{N('W', stage, ['shape', 2], 'int')}</td><td>{rf}</td>"
                    f"<td>{N('dead', stage, ['dead_channels'], 'int')}</td><td>{chans}</td></tr>")
    return ('<div class="table-wrap"><table><thead><tr><th>stage</th><th>layer</th><th>depth</th>'
            "<th>channels × height × width</th><th>receptive field</th><th>dead channels</th>"
            f"<th>channels shown (score)</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def _tuning(ctx: Context, data: dict, stages: dict, run_dir, src, N) -> list[str]:
    """The image-set part: top patches per channel and the selectivity of each layer."""
    iset, ch = data["image_set"], data.get("chance")
    k = ctx.num("k", iset["k"], "int", src, ["image_set", "k"])
    parts = ["<h3>What each channel is tuned to</h3>",
             f"<p>A map says where <i>this</i> photo excites a filter. To see what the filter responds to, every "
             f"image of <b>{esc(iset['name'])}</b> (", ctx.num("set_n", iset["images"], "int", src, ["image_set", "images"]),
             " images, ", ctx.num("set_lab", iset["labelled"], "int", src, ["image_set", "labelled"]),
             " of them labelled, in ", ctx.num("set_cls", iset["classes"], "int", src, ["image_set", "classes"]),
             " classes", _cap(ctx, iset, src), ") went through the network once; each channel's ", k, " images with the highest maximum are "
             "shown as the patch under that maximum: the unit's <i>receptive field</i>, computed from the kernels, "
             "strides, paddings and dilations of the layers on the path to it (grey where it hangs over the border; "
             "the whole crop when it is larger than the image).</p>"]
    for stage in STAGES:
        s = stages[stage]
        name = data["figures"].get(f"tuning_{stage}")
        if name:
            parts.append(ctx.figure(run_dir / name, f"{stage.capitalize()} layer <code>{esc(s['layer'])}</code>: per "
                                    "channel, its map on the photo, the map, and the patches of its top images "
                                    "(class and activation above each).", wide=True))
    if ch and all(stages[st].get("set_summary") for st in STAGES):
        parts.append(_selectivity_table(ctx, data, stages, src, N))
        if data["figures"].get("selectivity"):
            parts.append(ctx.figure(run_dir / data["figures"]["selectivity"], "Share of the top class among each "
                                    "live channel's top images, per layer, against random draws of as many images."))
    return parts


def _selectivity_table(ctx: Context, data: dict, stages: dict, src, N) -> str:
    ch = data["chance"]
    rows = []
    for stage in STAGES:
        p = ["set_summary"]
        rows.append(f"<tr><td>{stage}</td><td>{N('alive', stage, [*p, 'alive'], 'int')} / "
                    f"{N('chan', stage, [*p, 'channels'], 'int')}</td>"
                    f"<td>{N('msel', stage, [*p, 'mean_selectivity'], '.2f')}</td>"
                    f"<td>{N('share', stage, [*p, 'mean_top_share'], '.2f')}</td>"
                    f"<td>{N('nsel', stage, [*p, 'selective'], 'int')} "
                    f"({N('fsel', stage, [*p, 'selective_fraction'], '.0%')})</td>"
                    f"<td>{N('mixed', stage, [*p, 'mixed'], 'int')}</td></tr>")
    alpha = ctx.num("alpha", ch["alpha"], ".0%", src, ["chance", "alpha"])
    return ("<p>Selectivity is measured per channel over the labelled images. A channel's top images have a "
            "<i>top-class share</i> (the count of their most frequent class over their number) and a class entropy; "
            "<i>selectivity</i> = 1 − entropy / (mean entropy of random draws of as many images), 0 when they are as "
            "mixed as a random draw, 1 when they all share one class. A channel is <i>selective</i> when at most "
            f"{alpha} of random draws reach its top-class share, <i>mixed</i> otherwise. Random draws of this many "
            "labelled images have a mean "
            "top-class share of " + ctx.num("chance", ch["mean_top_share"], ".2f", src, ["chance", "mean_top_share"])
            + ("; a channel counts as selective from a top-class share of " + ctx.num(
                "thr", ch["top_share_threshold"], ".2f", src, ["chance", "top_share_threshold"])
               if ch["top_share_threshold"] is not None else
               "; with so few images per class, not even a top set of one class is rare enough to count as "
               "selective") + ".</p>"
            '<div class="table-wrap"><table><thead><tr><th>stage</th><th>live channels on the set</th>'
            "<th>mean selectivity</th><th>mean top-class share</th><th>selective</th><th>mixed</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _discussion(ctx: Context, data: dict, stages: dict, N) -> list[str]:
    e, m, l = (stages[s] for s in STAGES)
    disc = []
    if e["shape"][1] > l["shape"][1]:
        disc.append(f"<li><b>Resolution falls, channels grow.</b> From {N('H2', 'early', ['shape', 1], 'int')}×"
                    f"{N('W2', 'early', ['shape', 2], 'int')} pixels with {N('C2', 'early', ['shape', 0], 'int')} channels "
                    f"early to {N('H2', 'late', ['shape', 1], 'int')}×{N('W2', 'late', ['shape', 2], 'int')} with "
                    f"{N('C2', 'late', ['shape', 0], 'int')} late: one late-layer pixel stands for a patch "
                    + ctx.derived("late_vs_early_pixel", e["shape"][1] / l["shape"][1], "g",
                                  "early height / late height") +
                    " times wider than an early-layer pixel" + _late_field(l, N) + ", so a late map says "
                    "<i>whether</i> something is present more than <i>where</i>.</li>")
    if all(s.get("set_summary") for s in (e, m, l)):
        disc += _selectivity_claims(ctx, data, stages, N)
    if l["dead_channels"] > e["dead_channels"]:
        disc.append("<li><b>Deep features are sparse.</b> On this photo " + N("dead2", "late", ["dead_channels"], "int")
                    + " of the late layer's channels (" + ctx.derived("late_dead_frac", l["dead_channels"] / l["shape"][0],
                                                                      ".1%", "late dead channels / late channels")
                    + ") are constant (dead), against " + N("dead2", "early", ["dead_channels"], "int")
                    + " early: late channels respond to specific patterns, most of which are absent here.</li>")
    disc.append("<li><b>Limits of this reading.</b> The shown channels are " + ctx.derived(
        "late_shown_frac", len(l["channels"]) / l["shape"][0], ".1%", "channels shown / late channels")
        + " of the late layer, picked by a rule, so the pick shapes the story (the per-layer numbers above cover "
        "every channel); a channel's top images can only be drawn from the set, so what it is tuned to is "
        "read relative to that set's classes; and the next layer reads linear combinations of all channels, so a "
        "concept may live in a direction that no single channel shows.</li>")
    return disc


def _selectivity_claims(ctx: Context, data: dict, stages: dict, N) -> list[str]:
    """Sentences chosen by the per-layer selectivity numbers."""
    sel = [stages[s]["set_summary"]["mean_selectivity"] for s in STAGES]
    mixed = [stages[s]["set_summary"]["mixed"] / max(stages[s]["set_summary"]["alive"], 1) for s in STAGES]
    if sel[0] < sel[1] < sel[2]:
        trend = "grows with depth"
    elif sel[2] > sel[0]:
        trend = "is higher late than early, though not steadily"
    else:
        trend = "does not grow with depth here"
    nums = ", ".join(N("msel", s, ["set_summary", "mean_selectivity"], ".2f") + f" {s}" for s in STAGES)
    fields = ""
    if all(stages[s].get("receptive_field") for s in STAGES):
        fields = (" An early unit sees " + N("rf", "early", ["receptive_field", "size", 0], "g") + " px (edges, "
                  "colours, textures that occur in every class), a late one " + N("rf", "late", ["receptive_field",
                                                                                        "size", 0], "g") + " px.")
    late = stages["late"]["set_summary"]
    expected = ctx.derived("late_expected_selective", data["chance"]["alpha"] * late["alive"], ".0f",
                           "alpha × live late channels")
    out = [f"<li><b>Class selectivity {trend}</b> (mean over live channels: {nums}; 0 is a random draw).{fields} "
           f"By chance alone about {expected} of the late layer's live channels would count as selective; "
           + N("nsel", "late", ["set_summary", "selective"], "int") + " do.</li>"]
    share = ", ".join(ctx.derived(f"{s}_mixed_frac", mixed[i], ".0%", f"{s} mixed / live channels") + f" {s}"
                      for i, s in enumerate(STAGES))
    where = ("In every layer most channels are" if min(mixed) > 0.5 else "In some layers most channels are"
             if max(mixed) > 0.5 else "In every layer a minority of channels is")
    out.append(f"<li><b>Polysemantic channels.</b> {where} <i>mixed</i> at the level of these classes (their "
               f"top images spread over classes as a random draw would): {share}. Even where "
               "a channel's top images share a class, its patches show what it detects within them (a texture, a "
               "face part, a colour), which a class label does not name.</li>")
    late = stages["late"]
    if late["channels"] and late["channels"][0].get("top_class") is not None:
        picks = [c for c in late["channels"] if c.get("selective")]
        names = sorted({esc(c["top_class"]) for c in picks})
        out.append(f"<li><b>The late channels shown</b>: {len(picks)} of {len(late['channels'])} are selective"
                   + (f", for {', '.join(names)}" if names else "") + ".</li>")
    return out


def _late_field(late: dict, N) -> str:
    rf = late.get("receptive_field")
    if not rf:
        return ""
    size = N("rf2", "late", ["receptive_field", "size", 0], "g")
    crop = N("crop", "late", ["receptive_field", "crop", 0], "int")
    if rf["size"][0] >= rf["crop"][0]:
        return f", and its receptive field ({size} px) is wider than the whole {crop}-px crop"
    return f", and its receptive field spans {size} of the crop's {crop} px"


def _cap(ctx: Context, iset: dict, src) -> str:
    if not iset.get("max_per_class"):
        return ""
    return ("; at most " + ctx.num("cap", iset["max_per_class"], "int", src, ["image_set", "max_per_class"])
            + " per class, drawn at random with a fixed seed, so that the large classes do not crowd the top images")
