"""The main job on built-in defaults (what `make demo` runs).

Classifies the demo photo (``--image``, else the shared peppers photo when present, else
scikit-image's built-in ``coffee`` photo) with MobileNetV2 and shows its feature maps.

Example: cnnlab demo --image my_photo.jpg
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cnnlab.predict as predict
import cnnlab.featuremaps.run as featuremaps
from cnnlab.images import default_photo
from cnnlab.models.pretrained import DEFAULT_MODEL
from cnnlab.options import RunOptions, arg
from cnnlab.runs import atomic_write, new_run_dir


@dataclass(kw_only=True)
class Config(RunOptions):
    image: Path | None = arg(None, "photo to use (default: peppers when present, else a built-in photo)")
    model: str = arg(DEFAULT_MODEL, "torchvision classifier")


@dataclass
class Result:
    predict: predict.Result
    featuremaps: featuremaps.Result
    run_dir: Path


def run(config: Config) -> Result:
    run_dir = new_run_dir("demo", config.out)
    image = config.image
    if image is None:
        path, img, name = default_photo()
        if path is None:  # a built-in photo: write it so both verbs read the same file
            image = run_dir / f"{name}.png"
            atomic_write(image, lambda p: img.save(p, format="PNG"))
        else:
            image = path
    common = dict(seed=config.seed, deterministic=config.deterministic, device=config.device, quiet=config.quiet)
    pred = predict.run(predict.Config(images=[image], model=config.model, out=run_dir / "predict", **common))
    fmaps = featuremaps.run(featuremaps.Config(image=image, model=config.model, out=run_dir / "featuremaps", **common))
    return Result(pred, fmaps, run_dir)


def present(result: Result) -> int:
    code = predict.present(result.predict)
    featuremaps.present(result.featuremaps)
    print(f"demo results: {result.run_dir}")
    return code
