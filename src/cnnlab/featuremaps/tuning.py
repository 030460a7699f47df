"""What a channel is tuned to: its strongest responses over an image set, and the patches under them.

Every image of the set goes once through the network up to the chosen layers (the probe's
fast extraction loop, :func:`cnnlab.probe.extract.extract_batches`, in fp32). Per image and
channel only three numbers are kept: the map's maximum, its mean and the flat index of the
maximum. They are cached like the probe's features (:mod:`cnnlab.probe.cache`: keyed by the
model, weights, transform, layers and the files; rebuilt when stale or corrupt).

A channel's top-k images are those with the highest maxima (ties, e.g. at ReLU6's ceiling of
6, broken by the mean). The patch under a response is the receptive field of the unit at the
maximum (:mod:`cnnlab.featuremaps.receptive`) cut from the image the network saw.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.featuremaps.imageset import ImageSet
from cnnlab.featuremaps.receptive import ReceptiveField
from cnnlab.probe import cache as tensor_cache
from cnnlab.probe.extract import DEFAULT_BATCH, EvalTransform, extract_batches

log = logging.getLogger(__name__)

STATS = ("max", "mean", "argmax")  # per image and channel


@dataclass
class Activations:
    """Per layer: ``max``/``mean`` (N, C) float32 and ``argmax`` (N, C) int64 (flat index into H×W)."""

    layers: dict[str, dict[str, torch.Tensor]]
    shapes: dict[str, list[int]]  # layer -> [C, H, W]
    cache: str  # hit, missing, stale, corrupted or disabled
    cache_file: str | None
    seconds: float  # extraction time (0 on a cache hit)
    images_per_second: float | None


def crop_size(model) -> tuple[int, int]:
    """(H, W) of the images the network sees (the weights' centre crop)."""
    size = list(model.crop_size)
    return int(size[0]), int(size[-1])


def layer_shapes(model, extractor, layers: list[str]) -> dict[str, list[int]]:
    """[C, H, W] of each layer's output (``extractor``'s nodes) for one image at the weights' crop size."""
    with torch.inference_mode():
        out = extractor(torch.zeros(1, 3, *crop_size(model), device=model.mean.device))
    return {n: list(out[n].shape[1:]) for n in layers}


def _describe(model, images: ImageSet, layers: list[str], shapes: dict[str, list[int]]) -> dict:
    weights = model.spec.weights
    return {
        "format": "activations-1", "model": model.spec.name,
        "weights": f"{type(weights).__name__}.{weights.name}", "weights_file": Path(weights.url).name,
        "transform": EvalTransform.from_model(model).describe(), "precision": "fp32",
        "layers": {n: shapes[n] for n in layers},
        "files": tensor_cache.file_list_record(images.paths, images.labels),
    }


def cache_file(cache_dir: Path, images: ImageSet, model_name: str, layers: list[str]) -> Path:
    """One file per image set, model and layer list (other changes make it stale)."""
    tag = hashlib.sha256(" ".join(layers).encode()).hexdigest()[:8]
    return tensor_cache.cache_path(cache_dir, f"activations-{images.name}", tag, model_name, "fp32")


def _batch_fn(extractor, layers: list[str]):
    def run(model, batch_u8: torch.Tensor, precision: str, use_channels_last: bool) -> dict[str, torch.Tensor]:
        x = model.normalize(batch_u8.to(model.mean.device).float().div_(255.0))  # B, 3, H, W
        if use_channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = extractor(x)
        stats = {}
        for name in layers:
            a = out[name].float().flatten(2)  # B, C, H*W
            mx, arg = a.max(dim=2)
            stats.update({f"{name}/max": mx, f"{name}/mean": a.mean(dim=2), f"{name}/argmax": arg})
        return stats
    return torch.inference_mode()(run)


def activations(model, images: ImageSet, layers: list[str], *, cache_dir: Path | None, batch_size: int = DEFAULT_BATCH,
                workers: int = 2) -> Activations:
    """Per-channel max, mean and argmax of every image of ``images`` at each of ``layers``, cached."""
    extractor = create_feature_extractor(model.net, return_nodes={n: n for n in layers}).eval()
    shapes = layer_shapes(model, extractor, layers)
    description = _describe(model, images, layers, shapes)
    path = cache_file(cache_dir, images, model.spec.name, layers) if cache_dir is not None else None
    expect = {f"{n}/{s}": [len(images), shapes[n][0]] for n in layers for s in STATS}

    def build():
        out, ext = extract_batches(model, list(images.paths), _batch_fn(extractor, layers), batch_size=batch_size,
                                   workers=workers, precision="fp32", description="activations over the image set")
        return out, {"seconds": ext.seconds, "images_per_second": len(images) / max(ext.seconds, 1e-9)}

    tensors, extra, status = tensor_cache.load_or_build_tensors(path, description, build, expect)
    seconds = extra["seconds"] if status != "hit" else 0.0
    per_layer = {n: {s: tensors[f"{n}/{s}"] for s in STATS} for n in layers}
    return Activations(per_layer, shapes, status, str(path) if path else None, seconds,
                       extra.get("images_per_second"))


def top_images_all(stats: dict[str, torch.Tensor], k: int, mask: np.ndarray | None = None) -> np.ndarray:
    """Per channel, the ``k`` images with the highest maxima (ties by mean), among ``mask``: (C, k') indices,
    k' = min(k, images in mask)."""
    mx, mean = stats["max"].numpy().T, stats["mean"].numpy().T  # C, N
    if mask is not None:  # images outside the mask sort last
        mx = np.where(mask[None, :], mx, -np.inf)
    order = np.lexsort((-mean, -mx), axis=-1)  # C, N: by max, then mean, both descending
    n = len(mx[0]) if mask is None else int(mask.sum())
    return order[:, :min(k, n)].astype(np.int64)


def top_images(stats: dict[str, torch.Tensor], channel: int, k: int, mask: np.ndarray | None = None) -> list[int]:
    """:func:`top_images_all` for one channel."""
    one = {name: stats[name][:, channel:channel + 1] for name in ("max", "mean")}
    return top_images_all(one, k, mask)[0].tolist()


def response_box(stats: dict[str, torch.Tensor], image: int, channel: int, width: int, rf: ReceptiveField,
                 crop: tuple[int, int]) -> dict:
    """Where the channel's maximum sits in ``image`` (map row/column) and its receptive field in the crop."""
    flat = int(stats["argmax"][image, channel])
    y, x = divmod(flat, width)
    top, left, bottom, right = rf.box(y, x, crop[0], crop[1])
    return {"y": y, "x": x, "box": [top, left, bottom, right]}


def patch(crop_u8: torch.Tensor, rf: ReceptiveField, y: int, x: int) -> np.ndarray:
    """The receptive field of unit (y, x) cut from ``crop_u8`` (3, H, W), as (h, w, 3) in [0, 1].

    A field that fits in the crop is padded with grey where it hangs over the border, so the
    unit's centre stays at the patch's centre; a field larger than the crop gives the whole crop.
    """
    _, H, W = crop_u8.shape
    top, left, bottom, right = rf.box(y, x)
    img = crop_u8.permute(1, 2, 0).float().div(255.0).numpy()  # H, W, 3
    if bottom - top > H or right - left > W:
        return img
    out = np.full((bottom - top, right - left, 3), 0.5, dtype=np.float32)
    t, l, b, r = max(top, 0), max(left, 0), min(bottom, H), min(right, W)
    out[t - top:b - top, l - left:r - left] = img[t:b, l:r]
    return out
