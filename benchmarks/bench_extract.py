"""Feature extraction: cnnlab's extractor against a plain Dataset + DataLoader + fp32 loop.

All methods extract MobileNetV2 penultimate features of the same Oxford-IIIT Pet images in the
same process. Because the CPU is shared, the images are cut into chunks and the methods take
turns on each chunk (the order rotating every round), so load changes hit all methods alike;
the figure of merit is the ratio of images/s. Feature agreement is the cosine similarity of
the L2-normalized features of each image against the plain fp32 loop.

    .venv/bin/python benchmarks/bench_extract.py --data-root ../shared/data --images 256 --chunks 4

Methods:
  plain            torchvision transforms in a Dataset, DataLoader(batch_size=64, num_workers=0),
                   fp32, contiguous: the fixed baseline of the first runs
  plain-bB-wW      the same loop at batch B with W DataLoader workers, for every B in
                   ``--plain-batches`` and W in ``--plain-workers`` (the sweep); the fastest of
                   these and ``plain`` over the whole run is ``plain-best``, the baseline quoted
  cnnlab-fp32      cnnlab.probe.extract: threaded decoding, batch 16, channels_last, fp32
  cnnlab-2streams  as `cnnlab`, but two concurrent single-threaded inference streams (ablation)
  cnnlab           the default: precision 'auto' (bf16 where faithful), batch 16, one stream
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from cnnlab.data.pets import load_pets
from cnnlab.images import load_image
from cnnlab.models.pretrained import load_pretrained
from cnnlab.probe.extract import EvalTransform, calibration_sample, channels_last, choose_precision, extract_features


class PlainFiles(Dataset):
    """What a tutorial writes: open the file, torchvision transform, return the tensor."""

    def __init__(self, paths, transform):
        self.paths, self.transform = list(paths), transform

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.transform(load_image(self.paths[i]))


@torch.inference_mode()
def plain_features(model, paths, batch_size=64, workers=0):
    tf = T.Compose([T.Resize(model.resize_size, interpolation=model.interpolation, antialias=True),
                    T.CenterCrop(model.crop_size), T.ToTensor()])
    loader = DataLoader(PlainFiles(paths, tf), batch_size=batch_size, num_workers=workers)
    return torch.cat([model.forward_features(x) for x in loader])  # N, D


PLAIN_FIXED = (64, 0)  # batch, workers of the baseline as first measured


def ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def build_methods(model, args: argparse.Namespace, precision: str) -> dict:
    """Every method: chunk of paths -> (N, D) L2-normalized features."""
    def plain(batch: int, workers: int):
        return lambda c: F.normalize(plain_features(model, c, batch_size=batch, workers=workers), dim=1)

    methods = {"plain": plain(*PLAIN_FIXED)}
    for b in ints(args.plain_batches):
        for w in ints(args.plain_workers):
            if (b, w) != PLAIN_FIXED:
                methods[f"plain-b{b}-w{w}"] = plain(b, w)
    methods.update({
        "cnnlab-fp32": lambda c: extract_features(model, c, batch_size=args.batch_size, precision="fp32").features,
        "cnnlab-2streams": lambda c: extract_features(model, c, batch_size=args.batch_size, precision=precision,
                                                      calibrate=False, streams=2).features,
        "cnnlab": lambda c: extract_features(model, c, batch_size=args.batch_size, precision=precision,
                                             calibrate=False).features,
    })
    return methods


def run_rounds(methods: dict, chunks: list[list]) -> tuple[dict, dict, list[dict]]:
    """Each method extracts each chunk, taking turns (order rotated per round): total seconds,
    the features in chunk order, and each round's images/s."""
    seconds = {k: 0.0 for k in methods}
    feats: dict[str, list] = {k: [None] * len(chunks) for k in methods}
    rounds = []
    names = list(methods)
    for r, chunk in enumerate(chunks):
        row = {}
        for name in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            feats[name][r] = methods[name](chunk)
            row[name] = time.perf_counter() - t
            seconds[name] += row[name]
        rounds.append({k: len(chunk) / row[k] for k in names})
        print(f"round {r}: " + "  ".join(f"{k} {v:6.1f}" for k, v in rounds[-1].items()) + " img/s", flush=True)
    return seconds, feats, rounds


def summarize(n_images: int, seconds: dict, feats: dict, rounds: list[dict]) -> dict:
    """Per method: images/s, speed-up over ``plain`` and over ``plain-best`` (the fastest plain
    configuration over the whole run), as total-time ratios and medians of per-round ratios."""
    best = min((k for k in seconds if k.startswith("plain")), key=seconds.get)
    ref = torch.cat(feats["plain"])
    out = {"plain_best": best, "methods": {}}
    for name in seconds:
        cos = (torch.cat(feats[name]) * ref).sum(dim=1)
        out["methods"][name] = {
            "images_per_second": n_images / seconds[name],
            "speedup_vs_plain": seconds["plain"] / seconds[name],
            "median_round_speedup": statistics.median(rd[name] / rd["plain"] for rd in rounds),
            "speedup_vs_plain_best": seconds[best] / seconds[name],
            "median_round_speedup_vs_plain_best": statistics.median(rd[name] / rd[best] for rd in rounds),
            "cosine_vs_plain_min": float(cos.min()), "cosine_vs_plain_mean": float(cos.mean()),
        }
    return out


def print_table(summary: dict) -> None:
    best = summary["plain_best"]
    print(f"plain-best = {best}\n{'method':18s} {'img/s':>7s}  x plain (total, median round)  "
          f"x plain-best (total, median round)  cosine min")
    for name, m in summary["methods"].items():
        print(f"{name:18s} {m['images_per_second']:7.1f}  {m['speedup_vs_plain']:6.2f} {m['median_round_speedup']:6.2f}"
              f"{'':18s}{m['speedup_vs_plain_best']:6.2f} {m['median_round_speedup_vs_plain_best']:6.2f}"
              f"{'':22s}{m['cosine_vs_plain_min']:.5f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--images", type=int, default=256, help="test images used (from the start of the split)")
    ap.add_argument("--chunks", type=int, default=4, help="rounds; each method extracts one chunk per round")
    ap.add_argument("--batch-size", type=int, default=16, help="cnnlab's")
    ap.add_argument("--plain-batches", default="16,32,64", help="batch sizes swept for the plain loop")
    ap.add_argument("--plain-workers", default="0,1,2", help="DataLoader num_workers swept for the plain loop")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    model = load_pretrained("mobilenet_v2")
    pets = load_pets(args.data_root, download=False)
    paths = list(pets.test.paths + pets.train.paths)[: args.images]
    chunks = [paths[i::args.chunks] for i in range(args.chunks)]

    t0 = time.perf_counter()
    sample = calibration_sample(paths, EvalTransform.from_model(model))
    with torch.inference_mode(), channels_last(model):
        precision, agreement = choose_precision("auto", model, sample)
    calib_s = time.perf_counter() - t0

    methods = build_methods(model, args, precision)
    for fn in methods.values():  # warm-up: kernels, allocator, file cache
        fn(paths[:8])
    seconds, feats, rounds = run_rounds(methods, chunks)
    out = {"images": len(paths), "chunks": args.chunks, "precision_auto": precision, "calibration_seconds": calib_s,
           "calibration_agreement": vars(agreement) if agreement else None, "torch_threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           **summarize(len(paths), seconds, feats, rounds), "rounds": rounds}
    print_table(out)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
