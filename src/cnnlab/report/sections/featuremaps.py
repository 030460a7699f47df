"""Section: early, middle and late feature maps, and why they are hard to read (``cnnlab featuremaps``)."""

from __future__ import annotations

from statistics import mean

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import Context, Section, esc
from cnnlab.runs import read_json

ID = "featuremaps"
TITLE = "Feature maps: early, middle and late layers"
SOURCES = ("cnnlab.featuremaps.run", "cnnlab.featuremaps.extract", "cnnlab.featuremaps.select",
           "cnnlab.plots.featuremaps")


def build(ctx: Context) -> Section:
    import cnnlab.featuremaps.run as fm

    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    photo, _ = report_photo(ctx.data_root, ctx.work, ctx.photo)
    cfg = {"image": str(photo), "model": "mobilenet_v2", **ctx.profile.featuremaps}
    run_dir = ctx.cached("featuremaps", cfg, lambda d: fm.run(fm.Config(
        image=photo, model=cfg["model"], per_stage=cfg.get("per_stage", 5), out=d, **ctx.common)))
    src = run_dir / "featuremaps.json"
    data = read_json(src)
    stages = {s["stage"]: s for s in data["stages"]}
    idx = {s["stage"]: i for i, s in enumerate(data["stages"])}

    def N(key, stage, path, spec):
        value = stages[stage]
        for k in path:
            value = value[k]
        return ctx.num(f"{stage}.{key}", value, spec, src, ["stages", idx[stage], *path])

    parts = [f"<p>Feature maps of <b>{esc(data['model'])}</b> on <code>{esc(photo.name)}</code>. The three layers "
             "are picked from the network's traced graph at the start, the middle and the end of its ",
             ctx.num("n_blocks", data["n_blocks"], "int", src, ["n_blocks"]),
             " blocks; in each, the channels shown are the highest-scoring ones by this rule: ",
             f"<i>{esc(data['score_definition'])}</i> Each map is normalized to [0, 1] on its own.</p>"]
    rows = []
    for stage in ("early", "middle", "late"):
        s = stages[stage]
        chans = ", ".join(
            f"{c['channel']} ({ctx.num(f'{stage}.score{j}', c['score'], '.2f', src, ['stages', idx[stage], 'channels', j, 'score'])})"
            for j, c in enumerate(s["channels"]))
        rows.append(f"<tr><td>{stage}</td><td><code>{esc(s['layer'])}</code></td>"
                    f"<td>{N('depth', stage, ['depth'], 'int')} ({N('frac', stage, ['depth_fraction'], '.0%')})</td>"
                    f"<td>{N('C', stage, ['shape', 0], 'int')}×{N('H', stage, ['shape', 1], 'int')}×"
                    f"{N('W', stage, ['shape', 2], 'int')}</td><td>{N('dead', stage, ['dead_channels'], 'int')}</td>"
                    f"<td>{chans}</td></tr>")
    parts.append('<div class="table-wrap"><table><thead><tr><th>stage</th><th>layer</th><th>depth</th>'
                 "<th>channels × height × width</th><th>dead channels</th><th>channels shown (score)</th></tr></thead>"
                 f"<tbody>{''.join(rows)}</tbody></table></div>")
    for stage in ("early", "middle", "late"):
        name = data["figures"][stage]
        s = stages[stage]
        parts.append(ctx.figure(run_dir / name, f"{stage.capitalize()} layer <code>{esc(s['layer'])}</code>: "
                                f"{len(s['channels'])} channels, each normalized to [0, 1].", wide=True))

    e, m, l = stages["early"], stages["middle"], stages["late"]
    disc = []
    if e["shape"][1] > l["shape"][1]:
        disc.append(f"<li><b>Resolution falls, channels grow.</b> From {N('H2', 'early', ['shape', 1], 'int')}×"
                    f"{N('W2', 'early', ['shape', 2], 'int')} pixels with {N('C2', 'early', ['shape', 0], 'int')} channels "
                    f"early to {N('H2', 'late', ['shape', 1], 'int')}×{N('W2', 'late', ['shape', 2], 'int')} with "
                    f"{N('C2', 'late', ['shape', 0], 'int')} late: one late-layer pixel stands for a patch "
                    + ctx.derived("late_vs_early_pixel", e["shape"][1] / l["shape"][1], "g",
                                  "early height / late height") +
                    " times wider than an early-layer pixel. Early maps still look like the photo (edges, colour "
                    "contrasts, textures at their place); late maps are coarse blobs that say <i>whether</i> "
                    "something is present more than <i>where</i>.</li>")
    e_struct = mean(c["structure"] for c in e["channels"])
    l_struct = mean(c["structure"] for c in l["channels"])
    disc.append("<li><b>Spatial structure of the chosen maps</b> (mean lag-1 autocorrelation): "
                + ctx.derived("early_structure", e_struct, ".2f", "mean structure of the early channels shown")
                + " early, " + ctx.derived("middle_structure", mean(c["structure"] for c in m["channels"]), ".2f",
                                           "mean structure of the middle channels shown")
                + " middle, " + ctx.derived("late_structure", l_struct, ".2f", "mean structure of the late channels shown")
                + " late"
                + (": at such low resolutions a single blob already counts as smooth, so this score rises for reasons "
                   "that have little to do with meaning." if l_struct > e_struct else ".") + "</li>")
    dead_frac = l["dead_channels"] / l["shape"][0]
    if l["dead_channels"] > e["dead_channels"]:
        disc.append("<li><b>Deep features are sparse.</b> On this photo " + N("dead2", "late", ["dead_channels"], "int")
                    + " of the late layer's channels (" + ctx.derived("late_dead_frac", dead_frac, ".1%",
                                                                      "late dead channels / late channels")
                    + ") are constant (dead), against " + N("dead2", "early", ["dead_channels"], "int")
                    + " early: late channels respond to specific patterns, most of which are absent here.</li>")
    shown = len(l["channels"]) / l["shape"][0]
    disc.append("<li><b>Why interpreting them is hard.</b> We show " + str(len(l["channels"])) + " of "
                + N("C3", "late", ["shape", 0], "int") + " late channels ("
                + ctx.derived("late_shown_frac", shown, ".1%", "channels shown / late channels")
                + "), chosen by a score we defined, so the selection itself shapes the story; each map is normalized "
                "on its own, so brightness cannot be compared between maps; the next layer reads <i>linear "
                "combinations</i> of all channels, so a single channel is rarely a concept on its own (one channel "
                "responds to several unrelated patterns, and one pattern is spread over many channels); and a map only "
                "says where this image excites a filter, not what the filter is tuned to, which needs many images "
                "or optimized inputs to tell.</li>")
    parts.append("<h3>What they show</h3><ul>" + "".join(disc) + "</ul>")
    parts.append(ctx.provenance())
    sec.html = "".join(parts)
    return sec
