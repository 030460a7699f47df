"""Classify images with an ImageNet-1k pretrained CNN and print the top-k classes.

Preprocessing is exactly the weights' own evaluation transform and the class names are the
weights' own; probabilities are the softmax over all 1000 classes. A folder means every
image in it. An unusable image gets a one-line error and the others are still classified;
the exit code is 1 if any image failed.

Example: cnnlab predict peppers.png photos/ --model resnet50 --top-k 5 --json
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cnnlab.errors import ImageError
from cnnlab.images import expand_paths, load_image
from cnnlab.models.pretrained import DEFAULT_MODEL, load_pretrained
from cnnlab.options import RunOptions, arg
from cnnlab.progress import track
from cnnlab.runs import start_run, write_json

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class Config(RunOptions):
    images: list[Path] = arg(help="image files or folders", positional=True, metavar="IMAGE")
    model: str = arg(DEFAULT_MODEL, "torchvision classifier, optionally with weights (resnet50:IMAGENET1K_V2)")
    top_k: int = arg(3, "how many classes to print per image")
    batch_size: int = arg(16, "images per forward pass")
    json: bool = arg(False, "print the results as JSON on stdout")

    def __post_init__(self) -> None:
        if not self.images:
            raise ValueError("give at least one image file or folder")
        if not 1 <= self.top_k <= 1000:
            raise ValueError(f"--top-k must be between 1 and 1000, got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be at least 1, got {self.batch_size}")
        self.images = [Path(p) for p in self.images]


@dataclass
class Prediction:
    image: str
    classes: list[str]
    indices: list[int]
    probabilities: list[float]


@dataclass
class Result:
    model: str
    weights: str
    predictions: list[Prediction]
    errors: list[dict[str, str]] = field(default_factory=list)
    run_dir: Path | None = None
    seconds: float = 0.0
    as_json: bool = False


@torch.inference_mode()
def classify(model, images: list, top_k: int = 3, batch_size: int = 16) -> list[tuple[list[int], list[float]]]:
    """Top-k (indices, probabilities) for PIL images, in input order."""
    device = next(model.parameters()).device
    out: list[tuple[list[int], list[float]]] = []
    starts = range(0, len(images), batch_size)
    for start in track(starts, f"classifying ({model.spec.name})") if len(starts) > 1 else starts:
        batch = torch.stack([model.preprocess(im) for im in images[start:start + batch_size]]).to(device)
        probs = torch.softmax(model(batch).float(), dim=1)  # B, 1000
        p, i = probs.topk(top_k, dim=1)
        out.extend(zip(i.tolist(), p.tolist()))
    return out


def run(config: Config) -> Result:
    run = start_run("predict", config)
    run_dir = run.dir
    model = load_pretrained(config.model, device=run.device)
    t0 = time.perf_counter()

    paths = expand_paths(config.images)
    loaded: list[tuple[Path, object]] = []
    errors: list[dict[str, str]] = []
    for path in track(paths, "loading images"):
        try:
            loaded.append((path, load_image(path)))
        except ImageError as exc:
            log.debug("skipping %s", exc)
            errors.append({"image": exc.path, "reason": exc.reason})

    predictions = []
    for (path, _), (idx, probs) in zip(loaded, classify(model, [im for _, im in loaded], config.top_k, config.batch_size)):
        names = [model.categories[i] for i in idx]
        predictions.append(Prediction(str(path), names, idx, probs))
    result = Result(model.spec.name, f"{type(model.spec.weights).__name__}.{model.spec.weights.name}",
                    predictions, errors, run_dir, time.perf_counter() - t0, config.json)
    write_json(run_dir / "predictions.json", {k: v for k, v in vars(result).items() if k != "as_json"})
    return result


def present(result: Result) -> int:
    if result.as_json:
        print(json.dumps({"model": result.model, "weights": result.weights,
                          "predictions": [vars(p) for p in result.predictions], "errors": result.errors}, indent=2))
    else:
        print(f"model: {result.model}  weights: {result.weights}")
        for pred in result.predictions:
            print(pred.image)
            for rank, (name, idx, p) in enumerate(zip(pred.classes, pred.indices, pred.probabilities), 1):
                print(f"  {rank}. {name:<30s} (class {idx:3d})  {p:7.2%}")
        print(f"results: {result.run_dir}")
    for err in result.errors:  # one line per unusable image, on stderr
        print(f"error: {err['image']}: {err['reason']}", file=sys.stderr)
    return 1 if result.errors else 0
