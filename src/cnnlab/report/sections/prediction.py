"""Section: what a pretrained ImageNet CNN sees in the photo (``cnnlab predict``).

Shown by ``templates/sections/prediction.html.j2``.
"""

from __future__ import annotations

from pathlib import Path

from cnnlab.report.inputs import report_photo
from cnnlab.report.section import Figure, SectionContext, SectionData
from cnnlab.runs import read_json

ID = "prediction"
TITLE = "A pretrained network's prediction"
SOURCES = ("cnnlab.predict", "cnnlab.models.pretrained")


def collect(ctx: SectionContext) -> SectionData:
    import cnnlab.predict as predict

    photo, name = report_photo(ctx.data_root, ctx.work, ctx.photo)
    cfg = {"images": [str(photo)], "model": "mobilenet_v2", **ctx.profile.predict}
    run_dir = ctx.cached("predict", cfg, lambda d: predict.run(predict.Config(
        images=[photo], model=cfg["model"], top_k=cfg.get("top_k", 3), out=d, **ctx.common)))
    src = run_dir / "predictions.json"
    data = read_json(src)
    pred = data["predictions"][0]
    N = ctx.reader(src, data, base=["predictions", 0])
    figure = _photo_figure(ctx, photo, run_dir)
    rows = [SectionData(cls=cls, index=N(f"class{rank + 1}", ["indices", rank], "int"),
                        p=N(f"p{rank + 1}", ["probabilities", rank], ".2%"))
            for rank, cls in enumerate(pred["classes"])]
    top, p1 = pred["classes"][0], pred["probabilities"][0]
    return SectionData(
        photo_name=photo.name, model=data["model"], weights=data["weights"], figure=figure, rows=rows, top=top,
        confidence="confidently" if p1 >= 0.5 else "with modest confidence" if p1 >= 0.2 else "with low confidence",
        p1=N("p1_text", ["probabilities", 0], ".2%"),
        right=name == "peppers" and "pepper" in top.lower())  # a peppers photo, and the answer says so


def _photo_figure(ctx: SectionContext, photo: Path, run_dir: Path) -> Figure:
    """The input photo as a report figure (a PNG copy in the run folder)."""
    from cnnlab.images import load_image
    from cnnlab.runs import atomic_write

    dest = run_dir / "input.png"
    if not dest.exists():
        img = load_image(photo)
        img.thumbnail((512, 512))
        atomic_write(dest, lambda p: img.save(p, format="PNG"))
    return ctx.figure(dest)
