"""Linear probe: a pretrained CNN as a fixed feature extractor, a linear classifier on top.

Features are the network's last hidden layer after global pooling (1280-d for MobileNetV2,
2048-d for ResNet-50), L2-normalized, from the weights' own evaluation transform. A
multinomial logistic regression (or, with --classifier svm, a linear SVM) is fit on the
trainval features; C is chosen on a held-out validation split, then refit on all of trainval.
Reports the mean-per-class accuracy on the test split (the standard Pets metric), overall
accuracy, a per-class table and a confusion matrix (confusion.png).

Features are cached (see --cache-dir); a second run skips extraction. Under torchrun each
process extracts a shard and rank 0 gathers, fits and writes the results.

Examples:
  cnnlab probe --data-root ../shared/data
  cnnlab probe --dataset imagefolder:photos/ --model resnet50 --classifier svm
  torchrun --nproc-per-node 2 -m cnnlab probe --data-root ../shared/data
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cnnlab import distributed
from cnnlab.data.labeled import ImageSplits, LabeledImages
from cnnlab.distributed import Context
from cnnlab.models.pretrained import DEFAULT_MODEL, ImageNetClassifier, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.probe import cache as feature_cache
from cnnlab.probe.classify import (C_MAX, C_MIN, C_STEPS, CLASSIFIERS, VAL_FRACTION, c_grid, confusion_matrix,
                                   fit_probe, mean_per_class_accuracy, overall_accuracy, per_class_accuracy)
from cnnlab.probe.extract import DEFAULT_BATCH, PRECISIONS, EvalTransform, extract_features
from cnnlab.registry import Registry
from cnnlab.runs import save_figure, start_run, write_json

log = logging.getLogger(__name__)

DATASETS: Registry = Registry("dataset")
FOLDER_PREFIX = "imagefolder:"


@DATASETS.register("oxford-pets")
def _pets(config: Config) -> ImageSplits:
    from cnnlab.data.pets import load_pets

    return load_pets(config.data_root, download=config.download)


def load_dataset(config: Config) -> ImageSplits:
    """``oxford-pets`` (or another registered name) or ``imagefolder:PATH``."""
    if config.dataset.startswith(FOLDER_PREFIX):
        from cnnlab.data.folders import load_image_folder

        return load_image_folder(config.dataset[len(FOLDER_PREFIX):], test_fraction=config.test_fraction,
                                 seed=config.seed)
    try:
        return DATASETS.get(config.dataset)(config)
    except ValueError as exc:
        if "unknown dataset" in str(exc):
            raise ValueError(f"{exc}, or {FOLDER_PREFIX}PATH for a folder of images") from None
        raise


@dataclass(kw_only=True)
class Config(RunOptions):
    dataset: str = arg("oxford-pets", f"data set: oxford-pets, or {FOLDER_PREFIX}PATH "
                                      "(PATH/train/<class>/*, PATH/test/<class>/*, or PATH/<class>/*)")
    model: str = arg(DEFAULT_MODEL, "pretrained torchvision classifier used as feature extractor (resnet50:IMAGENET1K_V2)")
    data_root: Path | None = arg(None, "folder holding oxford-iiit-pet/ (default: $CNNLAB_DATA_ROOT, "
                                       "../shared/data, ~/.cache/cnnlab/data)")
    download: bool = arg(True, "download Oxford-IIIT Pet when it is not on disk")
    classifier: str = arg("logistic", "linear classifier on the features", choices=("logistic", "svm"))
    precision: str = arg("auto", "extraction precision; auto = bf16 only where supported and faithful to fp32",
                         choices=PRECISIONS)
    batch_size: int = arg(DEFAULT_BATCH, "images per forward pass (8-16 is fastest for MobileNetV2 on CPU)")
    workers: int = arg(2, "image decoding threads (0: decode in the main thread)")
    streams: int = arg(0, "batches run concurrently, each on torch_threads/streams threads (0: auto = 1)")
    c_min: float = arg(C_MIN, "smallest C of the log-spaced grid")
    c_max: float = arg(C_MAX, "largest C of the log-spaced grid")
    c_steps: int = arg(C_STEPS, "number of C values (1: use c_min without validation)")
    val_fraction: float = arg(VAL_FRACTION, "fraction of each trainval class held out to choose C")
    test_fraction: float = arg(0.2, "fraction of each class used as test for a single-folder image set")
    limit_per_class: int | None = arg(None, "use at most N images per class in each split (quick runs)")
    cache: bool = arg(True, "cache features on disk and reuse them")
    cache_dir: Path | None = arg(None, "feature cache folder (default: $CNNLAB_CACHE_DIR or ~/.cache/cnnlab/features)")

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.streams < 0:
            raise ValueError(f"--streams must be 0 (auto) or more, got {self.streams}")
        if self.workers < 0:
            raise ValueError(f"--workers must be 0 or more, got {self.workers}")
        if not 0 < self.val_fraction < 1 or not 0 < self.test_fraction < 1:
            raise ValueError("--val-fraction and --test-fraction must be between 0 and 1")
        if self.limit_per_class is not None and self.limit_per_class < 1:
            raise ValueError(f"--limit-per-class must be at least 1, got {self.limit_per_class}")
        c_grid(self.c_min, self.c_max, self.c_steps)  # validates the grid
        CLASSIFIERS.get(self.classifier)
        if self.data_root is not None:
            self.data_root = Path(self.data_root)
        if self.cache_dir is not None:
            self.cache_dir = Path(self.cache_dir)


@dataclass
class Result:
    """What the probe measured; ``run_dir`` holds config.json, env.json, results.json, confusion.png."""

    run_dir: Path | None
    dataset: str
    model: str
    weights: str
    classifier: str
    mean_per_class_accuracy: float
    overall_accuracy: float
    C: float
    grid: list[float]
    val_scores: list[float]
    per_class: list[dict]
    n_train: int
    n_test: int
    feature_dim: int
    extraction: dict
    notes: list[str] = field(default_factory=list)
    rank: int = 0  # under torchrun, only rank 0 fits and writes; other ranks get an empty Result


# ----------------------------------------------------------------------------- distributed
def _gather_features(local: torch.Tensor, n_total: int, ctx: Context) -> torch.Tensor | None:
    """Reassemble shards ``paths[r::world]`` on rank 0 (None on other ranks)."""
    if not ctx.enabled:
        return local
    shards = ctx.all_gather(local.numpy())
    if not ctx.is_main:
        return None
    out = torch.empty(n_total, local.shape[1], dtype=torch.float32)
    for r, shard in enumerate(shards):
        out[r::ctx.world_size] = torch.from_numpy(shard)
    return out


# ----------------------------------------------------------------------------- features
def _limit(images: LabeledImages, n: int | None) -> LabeledImages:
    if n is None:
        return images
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(images.labels):
        if seen.get(y, 0) < n:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return images.subset(keep)


def split_features(model: ImageNetClassifier, images: LabeledImages, split: str, dataset: str,
                   config: Config, ctx: Context = Context()) -> tuple[torch.Tensor | None, dict]:
    """Features (N, D) of one split, from the cache or extracted (sharded under torchrun).

    Returns (features or None on non-zero ranks, extraction record).
    """
    transform = EvalTransform.from_model(model).describe()
    description = feature_cache.describe(model, transform, config.precision, images.paths, images.labels)
    path = None
    if config.cache:
        cache_dir = config.cache_dir or feature_cache.default_cache_dir()
        path = feature_cache.cache_path(cache_dir, dataset, split, model.spec.name, config.precision)
        found = feature_cache.load(path, description)
        if ctx.all_agree(found.status == "hit"):
            log.info("%s features from cache %s", split, path)
            return found.features, {**(found.meta or {}), "cache": "hit", "cache_file": str(path)}
        status = found.status
        if status in ("stale", "corrupted"):
            log.warning("feature cache %s is %s (%s): rebuilding it", path, status, found.reason)
    else:
        status = "disabled"
    ctx.barrier()  # every rank has read the old file before rank 0 replaces it
    shard = list(images.paths[ctx.rank::ctx.world_size])
    ext = extract_features(model, shard, batch_size=config.batch_size, workers=config.workers,
                           precision=config.precision, description=f"{split} features",
                           calibration_paths=list(images.paths), streams=config.streams or None)
    feats = _gather_features(ext.features, len(images), ctx)
    record = {
        "seconds": ext.seconds, "images": len(images), "images_per_second": len(images) / max(ext.seconds, 1e-9),
        "precision": ext.precision, "channels_last": ext.channels_last, "processes": ctx.world_size,
        "batch_size": config.batch_size, "decode_threads": config.workers, "streams": ext.streams,
        "agreement": asdict(ext.agreement) if ext.agreement else None,
    }
    if ctx.is_main and path is not None:
        labels = torch.tensor(images.labels, dtype=torch.int64)
        feature_cache.save(path, description, feats, labels, record)
    return feats, {**record, "cache": status, "cache_file": str(path) if path else None}


# ----------------------------------------------------------------------------- the verb
def run(config: Config, *, model: ImageNetClassifier | None = None) -> Result:
    """Extract (or load cached) features, fit the probe, evaluate on test, write the run folder.

    ``model`` may be given to reuse an already-loaded :class:`ImageNetClassifier`.
    """
    run = start_run("probe", config, join_group=True)  # under torchrun on GPUs, run.device is this rank's GPU
    ctx, device, run_dir = run.ranks, run.device, run.dir
    splits = load_dataset(config)
    train, test = _limit(splits.train, config.limit_per_class), _limit(splits.test, config.limit_per_class)
    model = model if model is not None else load_pretrained(config.model, device=device)
    if model.head.out_features == model.feature_dim:
        log.warning("the head of %s is square: check that features are not the logits", model.spec.name)
    weights = f"{type(model.spec.weights).__name__}.{model.spec.weights.name}"

    X_train, ext_train = split_features(model, train, "trainval", splits.name, config, ctx)
    X_test, ext_test = split_features(model, test, "test", splits.name, config, ctx)
    extraction = {"trainval": ext_train, "test": ext_test, "feature_dim": model.feature_dim}
    distributed.teardown(ctx, wait=True)  # only extraction is distributed; rank 0 fits alone
    if not ctx.is_main:
        return Result(None, splits.name, model.spec.name, weights, config.classifier, float("nan"), float("nan"),
                      float("nan"), [], [], [], len(train), len(test), model.feature_dim, extraction, rank=ctx.rank)
    assert X_train is not None and X_test is not None
    if X_train.shape[1] != model.feature_dim:
        raise RuntimeError(f"features have {X_train.shape[1]} dimensions, expected the penultimate {model.feature_dim}")

    n_classes = len(splits.classes)
    grid = c_grid(config.c_min, config.c_max, config.c_steps)
    fit = fit_probe(X_train.numpy(), np.asarray(train.labels), n_classes, classifier=config.classifier,
                    grid=grid, val_fraction=config.val_fraction, seed=config.seed)
    y_test = np.asarray(test.labels)
    cm = confusion_matrix(y_test, fit.predict(X_test.numpy()), n_classes)
    acc = per_class_accuracy(cm)
    per_class = [
        {"class": name, "label": i, "n_train": int(nt), "n_test": int(cm[i].sum()), "correct": int(cm[i, i]),
         "accuracy": None if np.isnan(acc[i]) else float(acc[i])}
        for i, (name, nt) in enumerate(zip(splits.classes, train.class_counts()))
    ]
    result = Result(run_dir, splits.name, model.spec.name, weights, config.classifier,
                    mean_per_class_accuracy(cm), overall_accuracy(cm), fit.C, fit.grid, fit.val_scores,
                    per_class, len(train), len(test), model.feature_dim, extraction, fit.notes)
    absent = [p["class"] for p in per_class if p["n_test"] == 0]
    if absent:
        result.notes.append(f"{len(absent)} classes have no test images; mean-per-class accuracy averages "
                            f"the {n_classes - len(absent)} that do")
    _write_outputs(result, cm, splits.classes, fit.seconds)
    return result


def _write_outputs(result: Result, cm: np.ndarray, classes, fit_seconds: float) -> None:
    from cnnlab.plots.probe import confusion_figure, validation_curve_figure

    run_dir = result.run_dir
    assert run_dir is not None
    payload = {k: v for k, v in asdict(result).items() if k not in ("run_dir", "rank")}
    payload["fit_seconds"] = fit_seconds
    payload["confusion_matrix"] = cm
    payload["classes"] = list(classes)
    write_json(run_dir / "results.json", payload)
    title = (f"{result.model} linear probe on {result.dataset}: "
             f"mean-per-class acc. {result.mean_per_class_accuracy:.1%}")
    save_figure(confusion_figure(cm, classes, title=title), run_dir / "confusion.png")
    if len(result.grid) > 1:
        save_figure(validation_curve_figure(result.grid, result.val_scores, result.C, title="choosing C"),
                    run_dir / "validation.png")


def present(result: Result) -> int:
    if result.rank != 0:
        return 0
    ext = result.extraction
    print(f"dataset: {result.dataset}  model: {result.model} ({result.weights})  classifier: {result.classifier}")
    print(f"images: {result.n_train} trainval, {result.n_test} test; features: {result.feature_dim}-d, L2-normalized")
    for split in ("trainval", "test"):
        e = ext[split]
        agree = e.get("agreement")
        agree_s = f", bf16 vs fp32 cosine min {agree['min_cosine']:.5f}" if agree else ""
        print(f"  {split:8s} features: {e.get('cache')}; extracted at {e.get('images_per_second', float('nan')):.1f} "
              f"img/s in {e.get('precision')}{agree_s}")
    scores = ", ".join(f"{c:g}:{s:.3f}" for c, s in zip(result.grid, result.val_scores))
    print(f"C = {result.C:g} (validation mean-per-class accuracy by C: {scores})")
    print(f"{'class':<28s} {'train':>5s} {'test':>5s} {'acc':>7s}")
    for row in result.per_class:
        acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.1%}"
        print(f"{row['class']:<28s} {row['n_train']:5d} {row['n_test']:5d} {acc:>7s}")
    print(f"mean-per-class accuracy: {result.mean_per_class_accuracy:.2%}   overall accuracy: {result.overall_accuracy:.2%}")
    for note in result.notes:
        print(f"note: {note}")
    print(f"results: {result.run_dir}")
    return 0
