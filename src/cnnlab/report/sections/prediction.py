"""Section: what a pretrained ImageNet CNN sees in the photo (``cnnlab predict``)."""

from __future__ import annotations

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import Context, Section, esc
from cnnlab.runs import read_json

ID = "prediction"
TITLE = "A pretrained network's prediction"
SOURCES = ("cnnlab.predict", "cnnlab.models.pretrained")


def build(ctx: Context) -> Section:
    import cnnlab.predict as predict

    sec = ctx.begin(Section(ID, TITLE, ""), SOURCES)
    photo, name = report_photo(ctx.data_root, ctx.work, ctx.photo)
    cfg = {"images": [str(photo)], "model": "mobilenet_v2", **ctx.profile.predict}
    run_dir = ctx.cached("predict", cfg, lambda d: predict.run(predict.Config(
        images=[photo], model=cfg["model"], top_k=cfg.get("top_k", 3), out=d, **ctx.common)))
    src = run_dir / "predictions.json"
    data = read_json(src)
    pred = data["predictions"][0]
    figure = _photo_figure(ctx, photo, run_dir)
    rows = "".join(
        f"<tr><td>{rank + 1}</td><td>{esc(cls)}</td>"
        f"<td>{ctx.num(f'class{rank + 1}', idx, 'int', src, ['predictions', 0, 'indices', rank])}</td>"
        f"<td>{ctx.num(f'p{rank + 1}', p, '.2%', src, ['predictions', 0, 'probabilities', rank])}</td></tr>"
        for rank, (cls, idx, p) in enumerate(zip(pred["classes"], pred["indices"], pred["probabilities"])))
    top, p1 = pred["classes"][0], pred["probabilities"][0]
    confidence = ("confidently" if p1 >= 0.5 else "with modest confidence" if p1 >= 0.2 else "with low confidence")
    sec.html = "".join([
        f"<p>The photo <code>{esc(photo.name)}</code> classified by <b>{esc(data['model'])}</b> with the weights "
        f"<code>{esc(data['weights'])}</code> (ImageNet-1k, 1000 classes; the weights' own resize, centre crop and "
        "normalization). Its most probable classes and their softmax probabilities:</p>",
        figure,
        '<div class="table-wrap"><table><thead><tr><th>rank</th><th>class</th><th>ImageNet index</th>'
        f"<th>probability</th></tr></thead><tbody>{rows}</tbody></table></div>",
        f"<p>The network answers <b>{esc(top)}</b> {confidence} (", ctx.num("p1_text", p1, ".2%", src,
                                                                          ["predictions", 0, "probabilities", 0]),
        "). ",
        ("The photo shows peppers, so this is right. " if name == "peppers" and "pepper" in top.lower() else ""),
        "</p>", ctx.provenance(),
    ])
    return sec


def _photo_figure(ctx: Context, photo, run_dir) -> str:
    """The input photo as a report figure (a PNG copy in the run folder)."""
    from cnnlab.images import load_image
    from cnnlab.runs import atomic_write

    dest = run_dir / "input.png"
    if not dest.exists():
        img = load_image(photo)
        img.thumbnail((512, 512))
        atomic_write(dest, lambda p: img.save(p, format="PNG"))
    return ctx.figure(dest, f"The input photo, <code>{esc(photo.name)}</code>.")
