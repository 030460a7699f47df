"""Do adversarial images stay adversarial after a flip, a crop, a rotation or grayscale?

Give `cnnlab attack` run folders (every adversarial image in them is checked, with its target
and its clean class) or image files (with --target; --true-label adds P(original class)). Each
image is classified as saved, then after each of four transforms: a horizontal flip, the centre
crop keeping 80% of the area (resized back), a 30° rotation, and grayscale replicated to 3
channels. Several runs side by side (e.g. a pgd run and an eot run) show why plain attacks break
under transforms and EOT ones do not.

Runs of the same method at several ε give the price of robustness: the fraction of photos whose
target survives all four transforms at each ε (``survival_eps.png``), and for each photo the
smallest ε at which it does (``robustness.json``, ``min_eps``). The grid of transformed images
is also written in pages of ``PAGE_ROWS`` rows (``robustness-1.png``, ...), legible on an A4 page.

Example: cnnlab robustness runs/attack/<pgd-run> runs/attack/<eot-run>
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab.attacks.run import RESULTS_FILE, class_probabilities
from cnnlab.attacks.targets import parse_class
from cnnlab.attacks.transforms import robustness_transforms
from cnnlab.errors import CnnlabError
from cnnlab.images import IMAGE_SUFFIXES, expand_paths, load_image, pil_to_tensor
from cnnlab.models.pretrained import DEFAULT_MODEL, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.runs import read_json, save_figure, start_run, write_json

log = logging.getLogger(__name__)

NO_TRANSFORM = "none"  # the image as saved: the first column
PAGE_ROWS = 4  # rows of the grid per page figure


@dataclass(kw_only=True)
class Config(RunOptions):
    inputs: list[Path] = arg(help="`cnnlab attack` run folders, or adversarial image files",
                             positional=True, metavar="ADV_RUN_OR_IMAGE")
    target: list[str] = arg(default_factory=list, metavar="CLASS",
                            help="for image files: the target class (once or per image; default: the image's top-1)")
    true_label: list[str] = arg(default_factory=list, metavar="CLASS",
                                help="for image files: the original class, to report P(original class)")
    model: str = arg(DEFAULT_MODEL, "classifier for image files (run folders use their own model)")

    def __post_init__(self) -> None:
        if not self.inputs:
            raise ValueError("give at least one attack run folder or image")
        self.inputs = [Path(p) for p in self.inputs]
        self.target = [str(t) for t in self.target]
        self.true_label = [str(t) for t in self.true_label]


@dataclass
class Item:
    """One adversarial image to check."""

    label: str  # e.g. "pgd 2/255: peppers"
    path: Path
    model: str
    model_resolution: bool
    target: int | str | None
    original: int | str | None  # the clean class, when known
    method: str | None = None  # from the attack run, when known
    eps_grey: float | None = None
    image: str = ""  # the photo's name in the attack run


@dataclass
class Row:
    label: str
    image: str
    transform: str
    top1: int
    top1_name: str
    top1_prob: float
    target: int
    target_name: str
    p_target: float
    target_survives: bool  # the target is still top-1
    original: int | None
    p_original: float | None


@dataclass
class Result:
    run_dir: Path
    rows: list[Row]
    summary: dict[str, dict[str, object]]  # label -> {transform: survived, "all": bool}
    transforms: list[str]
    figure: Path
    results_json: Path
    survival_by_eps: dict[str, dict[str, float]] = field(default_factory=dict)
    min_eps: dict[str, dict[str, float | None]] = field(default_factory=dict)


def _items(config: Config) -> list[Item]:
    items: list[Item] = []
    files: list[Path] = []
    for p in config.inputs:
        if p.is_dir() and (p / RESULTS_FILE).exists():
            res, cfg = read_json(p / RESULTS_FILE), read_json(p / "config.json")
            for im in res["images"]:
                items.append(Item(f"{res['method']} {res['eps_grey']:g}/255: {im['name']}", p / im["adversarial_png"],
                                  cfg.get("model", DEFAULT_MODEL), bool(res.get("model_resolution")), im["target"],
                                  im["clean_class"], res["method"], float(res["eps_grey"]), im["name"]))
        elif p.is_dir() and not any(q.suffix.lower() in IMAGE_SUFFIXES for q in p.iterdir()):
            raise CnnlabError(f"{p}: neither an attack run folder (no {RESULTS_FILE}) nor a folder of images")
        else:
            files.extend(expand_paths([p]))
    n = len(files)
    for flag, values in (("--target", config.target), ("--true-label", config.true_label)):
        if len(values) > 1 and len(values) != n:
            raise CnnlabError(f"{flag}: give one value, or one per image file ({n} files), got {len(values)}")
    for i, f in enumerate(files):
        pick = lambda vals: vals[0] if len(vals) == 1 else (vals[i] if vals else None)  # noqa: E731
        items.append(Item(f.stem, f, config.model, False, pick(config.target), pick(config.true_label)))
    if not items:
        raise CnnlabError("no adversarial images found in the inputs")
    return items


def _check(item: Item, model, transforms: dict, device: str, rows: list[Row]) -> tuple[str, list]:
    """Classify ``item`` as saved and under each transform, appending one :class:`Row` per
    transform to ``rows``; returns the item's row of the figure grid (title, cells)."""
    from cnnlab.plots.attacks import RobustnessCell

    cats = model.categories
    preprocess = None if item.model_resolution else model.preprocess_tensor  # the attack's own pipeline
    x = pil_to_tensor(load_image(item.path))[None].to(device)  # 1, 3, H, W
    base = class_probabilities(model, x, preprocess)
    target = parse_class(item.target, cats) if item.target is not None else int(base.argmax())
    original = parse_class(item.original, cats) if item.original is not None else None
    cells = []
    for name, fn in transforms.items():
        xt = fn(x)  # 1, 3, H, W
        p = class_probabilities(model, xt, preprocess)
        top = int(p.argmax())
        rows.append(Row(item.label, str(item.path), name, top, cats[top], float(p[top]), target, cats[target],
                        float(p[target]), top == target, original,
                        float(p[original]) if original is not None else None))
        cells.append(RobustnessCell(xt[0].permute(1, 2, 0).cpu().numpy(), f"{cats[top]} {float(p[top]):.0%}",
                                    top == target))
    log.info("%s: target %s survives %d/4 transforms", item.label, cats[target],
             sum(r.target_survives for r in rows[-4:]))
    return f"{item.label}\n→ {cats[target]}", cells


def run(config: Config) -> Result:
    started = start_run("robustness", config)
    run_dir, device = started.dir, started.device
    items = _items(config)
    transforms = {NO_TRANSFORM: (lambda x: x), **robustness_transforms()}
    models: dict[str, object] = {}
    rows: list[Row] = []
    grid = []
    for item in items:
        if item.model not in models:
            models[item.model] = load_pretrained(item.model, device=device)
        grid.append(_check(item, models[item.model], transforms, device, rows))
    names = list(transforms)
    summary: dict[str, dict[str, object]] = {}
    for item in items:
        mine = {r.transform: r.target_survives for r in rows if r.label == item.label}
        summary[item.label] = {**mine, "all_four": all(mine[t] for t in names[1:])}
    return _write_results(run_dir, items, rows, summary, grid, names)


def _write_results(run_dir: Path, items: list[Item], rows: list[Row], summary: dict[str, dict[str, object]],
                   grid: list, names: list[str]) -> Result:
    """The grid figure (whole and in pages), the survival-vs-ε figure and ``robustness.json``."""
    from cnnlab.plots.attacks import robustness_grid

    figure = save_figure(robustness_grid(grid, names), run_dir / "robustness.png")
    pages = [save_figure(robustness_grid(grid[i:i + PAGE_ROWS], names), run_dir / f"robustness-{i // PAGE_ROWS + 1}.png")
             for i in range(0, len(grid), PAGE_ROWS)]
    curve, min_eps = price_of_robustness(items, summary)
    eps_figure = None
    if curve:
        from cnnlab.plots.attacks import survival_vs_eps

        eps_figure = save_figure(survival_vs_eps(curve), run_dir / "survival_eps.png").name
    results_json = write_json(run_dir / "robustness.json", {
        "transforms": names, "summary": summary, "survival_by_eps": curve, "min_eps": min_eps,
        "pages": [f.name for f in pages], "survival_figure": eps_figure, "rows": rows})
    return Result(run_dir, rows, summary, names, figure, results_json, curve, min_eps)


def price_of_robustness(items: list[Item], summary: dict[str, dict[str, object]]
                        ) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float | None]]]:
    """From attack runs: per method, the fraction of photos surviving all four transforms at each
    ε ({method: {"2": 0.5, ...}}, ε in grey levels), and per method and photo the smallest ε at
    which the photo survives all four (None: at no ε tried)."""
    runs: dict[str, dict[float, list[tuple[str, bool]]]] = {}
    for item in items:
        if item.method is not None and item.eps_grey is not None:
            runs.setdefault(item.method, {}).setdefault(item.eps_grey, []).append(
                (item.image, bool(summary[item.label]["all_four"])))
    curve = {m: {f"{e:g}": sum(ok for _, ok in v) / len(v) for e, v in sorted(by.items())} for m, by in runs.items()}
    min_eps: dict[str, dict[str, float | None]] = {}
    for m, by in runs.items():
        for e, v in sorted(by.items()):
            for image, ok in v:
                mine = min_eps.setdefault(m, {})
                if mine.get(image) is None:
                    mine[image] = e if ok else None
    return curve, min_eps


def present(result: Result) -> int:
    print(f"{'image':<24s} {'transform':<10s} {'top-1':<24s} {'P(top-1)':>8s} {'target?':>8s} "
          f"{'P(target)':>9s} {'P(orig)':>8s}")
    for r in result.rows:
        p_orig = f"{r.p_original:8.3f}" if r.p_original is not None else f"{'-':>8s}"
        print(f"{r.label[:24]:<24s} {r.transform:<10s} {r.top1_name[:24]:<24s} {r.top1_prob:8.3f} "
              f"{'yes' if r.target_survives else 'no':>8s} {r.p_target:9.3f} {p_orig}")
    n_all = sum(bool(s["all_four"]) for s in result.summary.values())
    print(f"target top-1 under all four transforms: {n_all}/{len(result.summary)} images")
    for method, curve in result.survival_by_eps.items():
        print(f"{method}: survives all four at ε " + ", ".join(f"{e}/255: {v:.0%}" for e, v in curve.items()))
        print("  smallest ε surviving all four: " + ", ".join(
            f"{name} {e:g}/255" if e is not None else f"{name} none" for name, e in result.min_eps[method].items()))
    print(f"figure: {result.figure}")
    print(f"results: {result.results_json}")
    return 0


def survival_table(result: Result) -> np.ndarray:
    """(images, transforms) boolean array of 'target still top-1', in the order of ``result.summary``."""
    return np.array([[bool(s[t]) for t in result.transforms] for s in result.summary.values()])
