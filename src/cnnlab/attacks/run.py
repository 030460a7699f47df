"""Targeted adversarial examples: nudge a photo, invisibly, until the CNN sees the target class.

The attack works on the photo at its own resolution (the model's resize and centre crop are
part of the differentiable pipeline), keeps every pixel within ε of the original, quantizes the
result to 8 bits and re-checks it: the saved lossless PNG, same size as the input, must itself
reach P(target) >= --threshold, or the image is reported as a failure (exit code 1).

Without images it attacks peppers (the shared copy, towards 812 space shuttle) and three
built-in scikit-image photos (chelsea the cat -> banana, coffee -> space shuttle, the
cameraman's tripod -> radio telescope). ``--target random`` draws each photo's target with the
run's seed, uniformly over the classes outside its clean top-5, and records the draw in
``attack.json``.

Example: cnnlab attack peppers.png --target 'space shuttle' --eps 2/255 --method pgd
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from cnnlab.attacks import ATTACKS, Attack, AttackOutput
from cnnlab.attacks.base import Preprocess
from cnnlab.attacks.targets import EXCLUDE_TOP, Photo, default_photos, parse_class, parse_fraction, random_target
from cnnlab.errors import CnnlabError
from cnnlab.images import load_image, pil_to_tensor, save_png
from cnnlab.models.pretrained import DEFAULT_MODEL, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.progress import make_progress
from cnnlab.runs import save_figure, start_run, write_json

log = logging.getLogger(__name__)

RESULTS_FILE = "attack.json"
RANDOM = "random"  # --target random
FIGURE_FILE = "attack.png"


@dataclass(kw_only=True)
class Config(RunOptions):
    images: list[Path] = arg(default_factory=list, help="photos to attack (default: peppers + 3 built-in photos)",
                             positional=True, metavar="IMAGE")
    target: list[str] = arg(default_factory=list, metavar="CLASS",
                            help="target class, index or name ('812' or 'space shuttle'), or 'random' (drawn with --seed "
                                 "outside the clean top-5): once, or one per image")
    true_label: list[str] = arg(default_factory=list, metavar="CLASS",
                                help="the right class of your photo(s), to check the clean top-1 (once or per image)")
    eps: float = arg(2 / 255, "L∞ budget in [0, 1] units; fractions allowed (2/255 = two grey levels)",
                     parse=parse_fraction, metavar="EPS")
    method: str = arg("pgd", "attack", choices=tuple(ATTACKS.names()))
    steps: int | None = arg(None, "step budget (default: the method's, " + ", ".join(
        f"{name} {ATTACKS.get(name).default_options.steps}" for name in ATTACKS) + ")")
    step_size: float | None = arg(None, "per-step change (λ or α) in [0, 1] units (default 0.5/255; eot: ε/4, "
                                  "decaying)",
                                  parse=parse_fraction, metavar="SIZE")
    threshold: float = arg(0.9, "stop, and count success, when P(target) on the 8-bit image reaches this")
    samples: int = arg(3, "eot: jittered views per step, beside the plain image and the four exact transforms")
    random_start: bool = arg(False, "pgd: start from a random point in the ε-ball")
    model: str = arg(DEFAULT_MODEL, "torchvision ImageNet classifier (see `cnnlab models`)")
    model_resolution: bool = arg(False, "attack the model's 224×224 input instead of the photo itself")
    amplify: float | None = arg(None, "noise amplification in the figure (default: ε maps to ±0.5)")

    def __post_init__(self) -> None:
        self.eps = parse_fraction(self.eps)
        if not 0 < self.eps < 1:
            raise ValueError(f"--eps must be in (0, 1) (e.g. 2/255), got {self.eps:g}")
        if self.method not in ATTACKS:
            ATTACKS.get(self.method)  # raises, listing the valid names
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"--steps must be at least 1, got {self.steps}")
        if self.step_size is not None:
            self.step_size = parse_fraction(self.step_size)
            if not 0 < self.step_size < 1:
                raise ValueError(f"--step-size must be in (0, 1), got {self.step_size:g}")
        if not 0 < self.threshold < 1:
            raise ValueError(f"--threshold must be in (0, 1), got {self.threshold}")
        if self.samples < 0:
            raise ValueError(f"--samples must be at least 0, got {self.samples}")
        if self.amplify is not None and self.amplify <= 0:
            raise ValueError(f"--amplify must be > 0, got {self.amplify}")
        self.images = [Path(p) for p in self.images]
        self.target = [RANDOM if str(t).strip().lower() == RANDOM else str(t) for t in self.target]
        self.true_label = [str(t) for t in self.true_label]
        n = len(self.images)
        for flag, values in (("--target", self.target), ("--true-label", self.true_label)):
            if n and len(values) > 1 and len(values) != n:
                raise ValueError(f"{flag}: give one value, or one per image ({n} images), got {len(values)}")


@dataclass
class ImageResult:
    """Every number for one attacked image (probabilities are softmax over the 1000 classes)."""

    name: str
    source: str
    width: int
    height: int
    target: int
    target_name: str
    clean_class: int
    clean_name: str
    clean_prob: float
    clean_correct: bool | None  # None when the true class is unknown
    p_target_clean: float
    adv_class: int
    adv_name: str
    adv_prob: float
    p_target: float  # on the saved 8-bit image
    p_clean_class_adv: float  # P(clean top-1 class) on the adversarial image
    p_target_predict: float  # P(target) on the reloaded PNG through `cnnlab predict`'s PIL pipeline
    linf_grey: int  # max |adversarial - original| over all pixels, in grey levels (0-255)
    linf: float  # the same in [0, 1] units
    psnr: float  # dB
    ssim: float
    steps: int
    seconds: float
    success: bool  # P(target) >= threshold on the saved image, and the PNG reloads exactly
    png_exact: bool  # the saved PNG reloads to the same pixels
    original_png: str
    adversarial_png: str
    target_random: bool = False  # drawn by --target random
    target_excluded: list[int] | None = None  # the clean top-5 the random draw excluded


@dataclass
class Result:
    run_dir: Path
    method: str
    model: str
    eps: float
    threshold: float
    images: list[ImageResult]
    figure: Path
    results_json: Path
    seconds: float
    amplify: float
    warnings: list[str] = field(default_factory=list)

    @property
    def all_success(self) -> bool:
        return all(r.success for r in self.images)


def _per_image(values: list[str], n: int, flag: str) -> list[str | None]:
    if not values:
        return [None] * n
    if len(values) == 1:
        return values * n
    if len(values) != n:
        raise CnnlabError(f"{flag}: give one value, or one per image ({n} images), got {len(values)}")
    return list(values)


def _photos(config: Config) -> list[Photo]:
    if not config.images:
        return default_photos()
    return [Photo(p.stem, str(p), load_image(p)) for p in config.images]  # ImageError is a CnnlabError


def _to_hwc_uint8(x: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [0, 1] -> (H, W, 3) uint8."""
    return x.detach().mul(255).round().clamp(0, 255).byte().permute(1, 2, 0).cpu().numpy()


def image_metrics(original: torch.Tensor, adversarial: torch.Tensor) -> tuple[int, float, float]:
    """(L∞ in grey levels, PSNR in dB, SSIM) between two (3, H, W) 8-bit valued images."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = _to_hwc_uint8(original), _to_hwc_uint8(adversarial)
    linf = int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
    psnr = float(peak_signal_noise_ratio(a, b, data_range=255)) if linf else float("inf")
    ssim = float(structural_similarity(a, b, channel_axis=-1, data_range=255))
    return linf, psnr, ssim


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name)[:40] or "image"


def attack_flags(config: Config, cls: type[Attack]) -> dict:
    """The attack's own settings on the command line: the ``Config`` fields that are also fields
    of the attack's options (``steps``, ``step_size``, EOT's ``samples``, PGD's
    ``random_start``); ``None`` keeps the attack's default."""
    shared = {f.name for f in fields(cls.default_options)} & {f.name for f in fields(Config)}
    return {name: getattr(config, name) for name in sorted(shared)}


def build_attack(config: Config, model, preprocess) -> Attack:
    """The ``--method`` attack from the registry, with the options given on the command line."""
    cls = ATTACKS.get(config.method)
    return cls(model, eps=config.eps, threshold=config.threshold, preprocess=preprocess, **attack_flags(config, cls))


def class_probabilities(model, x: torch.Tensor, preprocess: Preprocess | None = None) -> torch.Tensor:
    """Softmax (classes,) of the model on one image (1, 3, H, W), moved to the model's device and
    then passed through ``preprocess`` (none: ``x`` is the model input); on the CPU."""
    x = x.to(next(model.parameters()).device)
    with torch.no_grad():
        return torch.softmax(model(preprocess(x) if preprocess else x).float(), 1)[0].cpu()


@dataclass
class Clean:
    """The clean photo as the model sees it, and the target the attack aims at."""

    p: torch.Tensor  # (classes,) softmax
    top1: int
    target: int
    excluded: list[int] | None  # the clean top-5 a random target was drawn outside of
    correct: bool | None  # clean top-1 is a true class; None when the truth is unknown


def _targets_and_truths(config: Config, photos: list[Photo], cats: list[str]
                        ) -> tuple[list[int | str], list[tuple[int, ...]]]:
    """Per photo: its target (a class, or ``RANDOM`` to draw later) and its accepted true classes."""
    targets = [t if t == RANDOM else parse_class(t, cats) if t is not None else p.default_target
               for p, t in zip(photos, _per_image(config.target, len(photos), "--target"))]
    truths = [(parse_class(t, cats),) if t is not None else p.true_classes
              for p, t in zip(photos, _per_image(config.true_label, len(photos), "--true-label"))]
    return targets, truths


def _look_clean(model, x: torch.Tensor, preprocess, photo: Photo, target: int | str, truth: tuple[int, ...],
                draws: np.random.Generator, warnings: list[str]) -> Clean:
    """Classify the clean photo, draw a random target, and warn (into ``warnings``) when the
    attack proves little: a misclassified photo, or one already classified as the target."""
    cats = model.categories
    p_clean = class_probabilities(model, x, preprocess)
    clean_class = int(p_clean.argmax())
    excluded = None
    if target == RANDOM:
        target, excluded = random_target(p_clean.numpy(), draws)
    correct = (clean_class in truth) if truth else None
    log.info("%s: clean top-1 %s (%d) %.1f%%; target %s (%d)", photo.name, cats[clean_class],
             clean_class, 100 * p_clean[clean_class], cats[target], target)
    msgs = []
    if correct is False:
        msgs.append(f"{photo.name}: the clean photo is misclassified as {cats[clean_class]!r} (expected "
                    f"{' or '.join(repr(cats[t]) for t in truth)}): attacking it proves little")
    if clean_class == target:
        msgs.append(f"{photo.name}: the clean photo is already classified as the target {cats[target]!r}")
    for msg in msgs:
        log.warning(msg)
    warnings.extend(msgs)
    return Clean(p_clean, clean_class, target, excluded, correct)


def _image_result(i: int, photo: Photo, x: torch.Tensor, clean: Clean, out: AttackOutput, model, preprocess,
                  run_dir: Path, threshold: float) -> ImageResult:
    """Save the original and adversarial PNGs, reload the adversarial one and measure it."""
    cats, target, adv = model.categories, clean.target, out.adversarial[0]  # adv: 3, H, W
    stem = f"{i:02d}-{_safe(photo.name)}"
    orig_png = save_png(x[0], run_dir / f"{stem}-original.png")
    adv_png = save_png(adv, run_dir / f"{stem}-adversarial.png")
    reloaded_img = load_image(adv_png)
    reloaded = pil_to_tensor(reloaded_img)
    png_exact = bool(torch.equal(reloaded, adv.cpu()))
    p_adv = class_probabilities(model, reloaded[None], preprocess)
    p_pred = class_probabilities(model, model.preprocess(reloaded_img)[None])  # `cnnlab predict`'s pipeline
    adv_class = int(p_adv.argmax())
    linf_grey, psnr, ssim = image_metrics(x[0], reloaded)
    r = ImageResult(
        name=photo.name, source=photo.source, width=int(x.shape[-1]), height=int(x.shape[-2]),
        target=target, target_name=cats[target], clean_class=clean.top1, clean_name=cats[clean.top1],
        clean_prob=float(clean.p[clean.top1]), clean_correct=clean.correct,
        p_target_clean=float(clean.p[target]), adv_class=adv_class, adv_name=cats[adv_class],
        adv_prob=float(p_adv[adv_class]), p_target=float(p_adv[target]),
        p_clean_class_adv=float(p_adv[clean.top1]), p_target_predict=float(p_pred[target]),
        linf_grey=linf_grey, linf=linf_grey / 255, psnr=psnr, ssim=ssim, steps=int(out.steps[0]),
        seconds=out.seconds, success=bool(float(p_adv[target]) >= threshold and png_exact),
        png_exact=png_exact, original_png=orig_png.name, adversarial_png=adv_png.name,
        target_random=clean.excluded is not None, target_excluded=clean.excluded,
    )
    log.info("%s: adversarial top-1 %s %.1f%%, P(target) %.3f, L∞ %d/255, PSNR %.1f dB, SSIM %.4f, "
             "%d steps, %.1f s", r.name, r.adv_name, 100 * r.adv_prob, r.p_target, r.linf_grey, r.psnr,
             r.ssim, r.steps, r.seconds)
    return r


def run(config: Config) -> Result:
    started = start_run("attack", config)
    run_dir = started.dir
    photos = _photos(config)
    model = load_pretrained(config.model, device=started.device)
    targets, truths = _targets_and_truths(config, photos, model.categories)
    preprocess = (lambda x: x) if config.model_resolution else model.preprocess_tensor
    attack = build_attack(config, model, preprocess)
    draws = np.random.default_rng(config.seed)  # --target random: one draw per photo, in order
    t_all = time.perf_counter()
    rows: list[ImageResult] = []
    warnings: list[str] = []
    with make_progress() as progress:
        for i, (photo, target, truth) in enumerate(zip(photos, targets, truths)):
            if config.model_resolution:
                x = model.preprocess(photo.image)[None]  # 1, 3, 224, 224, 8-bit valued
            else:
                x = pil_to_tensor(photo.image)[None]  # 1, 3, H, W
            clean = _look_clean(model, x, preprocess, photo, target, truth, draws, warnings)
            task = progress.add_task(f"{config.method} {photo.name}", total=attack.steps, info="")
            attack.on_step = lambda t, done, task=task: progress.update(task, completed=t)
            out = attack(x, clean.target)
            progress.update(task, completed=attack.steps)
            rows.append(_image_result(i, photo, x, clean, out, model, preprocess, run_dir, config.threshold))
    return _write_results(config, attack, model.spec.label, run_dir, rows, warnings, time.perf_counter() - t_all)


def _write_results(config: Config, attack: Attack, model_label: str, run_dir: Path, rows: list[ImageResult],
                   warnings: list[str], seconds: float) -> Result:
    """The figure and ``attack.json``."""
    amplify = config.amplify or 0.5 / config.eps
    figure = save_figure(_figure(run_dir, rows, amplify, config.eps), run_dir / FIGURE_FILE)
    result = Result(run_dir=run_dir, method=config.method, model=model_label, eps=config.eps,
                    threshold=config.threshold, images=rows, figure=figure, results_json=run_dir / RESULTS_FILE,
                    seconds=seconds, amplify=amplify, warnings=warnings)
    write_json(result.results_json, {
        "method": result.method, "model": result.model, "eps": result.eps, "eps_grey": result.eps * 255,
        "threshold": result.threshold, "steps_budget": attack.steps, "step_size": attack.step_size,
        "step_size_grey": attack.step_size * 255,
        "samples": getattr(attack.options, "samples", None),  # jittered views per step, for attacks that draw them
        "model_resolution": config.model_resolution, "amplify": amplify, "all_success": result.all_success,
        "seconds": result.seconds, "warnings": warnings, "figure": figure.name,
        "target_draw": {"seed": config.seed, "rule": f"uniform over the classes outside the clean top-{EXCLUDE_TOP}, "
                        "one draw per photo in order (numpy default_rng(seed))"}
        if any(r.target_random for r in rows) else None,
        "images": rows,
    })
    return result


def _figure(run_dir: Path, rows: list[ImageResult], amplify: float, eps: float):
    from cnnlab.plots.attacks import AttackRow, attack_grid

    grid = [AttackRow(np.asarray(load_image(run_dir / r.original_png)), np.asarray(load_image(run_dir / r.adversarial_png)),
                      f"{r.clean_name} {r.clean_prob:.1%}", f"{r.adv_name} {r.adv_prob:.1%}", r.name) for r in rows]
    return attack_grid(grid, amplify, eps_grey=round(eps * 255, 2))


def present(result: Result) -> int:
    print(f"{result.method} attack on {result.model}, ε = {result.eps * 255:g}/255, "
          f"success when P(target) ≥ {result.threshold:g} on the saved 8-bit PNG")
    for r in result.images:
        ok = "ok  " if r.success else "FAIL"
        correct = {True: "", False: "  (MISCLASSIFIED clean photo)", None: ""}[r.clean_correct]
        print(f"{ok} {r.name} ({r.width}×{r.height})")
        print(f"     clean: {r.clean_name} {r.clean_prob:.1%}{correct}   target: {r.target_name} ({r.target})")
        print(f"     adversarial: {r.adv_name} {r.adv_prob:.1%}, P(target) {r.p_target:.3f}, "
              f"L∞ {r.linf_grey}/255, PSNR {r.psnr:.1f} dB, SSIM {r.ssim:.4f}, {r.steps} steps, {r.seconds:.1f} s")
    print(f"figure: {result.figure}  (noise amplified ×{result.amplify:g})")
    print(f"results: {result.results_json}")
    return 0 if result.all_success else 1
