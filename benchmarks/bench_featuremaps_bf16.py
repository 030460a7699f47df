"""Would bf16 autocast serve the feature-map image set? Speed and agreement against fp32, one process.

Runs the activation pass of ``cnnlab featuremaps`` (:func:`cnnlab.featuremaps.tuning._batch_fn` in the
probe's extraction loop) over the default image set (the Pets copy under the data root plus the
built-in photos) for MobileNetV2's early, middle and late blocks, once in fp32 and once with bf16
autocast, and reports each pass's images/s and, per layer, how often bf16 keeps the fp32 result:
the share of each channel's top-8 images that stay in its top 8, the share of (image, channel)
maxima at the same map location, and the per-layer selectivity summary.

Usage: python benchmarks/bench_featuremaps_bf16.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from torchvision.models.feature_extraction import create_feature_extractor

from cnnlab.featuremaps import tuning
from cnnlab.featuremaps.imageset import builtin_photos, pets_set, with_photos
from cnnlab.featuremaps.selectivity import chance_level, channel_selectivity, summarize
from cnnlab.models.pretrained import load_pretrained
from cnnlab.probe.extract import extract_batches

LAYERS = ["features.3", "features.9", "features.18"]


def stats_of(model, images, precision: str) -> tuple[dict, float]:
    extractor = create_feature_extractor(model.net, {n: n for n in LAYERS}).eval()
    out, ext = extract_batches(model, list(images.paths), tuning._batch_fn(extractor, LAYERS), precision=precision,
                               calibrate=False, workers=2)
    per_layer = {n: {s: out[f"{n}/{s}"] for s in tuning.STATS} for n in LAYERS}
    return per_layer, len(images) / ext.seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--k", type=int, default=8)
    args = ap.parse_args()
    os.environ.setdefault("CNNLAB_NO_PROGRESS", "1")
    model = load_pretrained("mobilenet_v2")
    images = with_photos(pets_set(args.data_root), builtin_photos(args.data_root))
    print(f"{len(images)} images, load average {os.getloadavg()[0]:.1f}, torch threads {torch.get_num_threads()}")
    ref, ips32 = stats_of(model, images, "fp32")
    low, ips16 = stats_of(model, images, "bf16")
    print(f"fp32 {ips32:.1f} img/s, bf16 {ips16:.1f} img/s ({ips16 / ips32:.2f}x), load average {os.getloadavg()[0]:.1f}")
    labels, mask = np.asarray(images.labels), images.labelled
    chance = chance_level(labels[mask], args.k)
    for n in LAYERS:
        a, b = ref[n], low[n]
        ta, tb = tuning.top_images_all(a, args.k), tuning.top_images_all(b, args.k)
        overlap = np.mean([len(set(x) & set(y)) / args.k for x, y in zip(ta, tb)])
        same = (a["argmax"] == b["argmax"]).float().mean().item()
        alive = np.ones(a["max"].shape[1], dtype=bool)
        sa, sb = (summarize(channel_selectivity(tuning.top_images_all(s, args.k, mask), labels, alive, chance))
                  for s in (a, b))
        print(f"{n}: top-{args.k} kept {overlap:.3f}, argmax same {same:.3f}; mean selectivity fp32 "
              f"{sa.mean_selectivity:.3f} / bf16 {sb.mean_selectivity:.3f}, selective {sa.selective} / {sb.selective}")


if __name__ == "__main__":
    main()
