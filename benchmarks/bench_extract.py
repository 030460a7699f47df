"""Feature extraction: cnnlab's extractor against a plain Dataset + DataLoader + fp32 loop.

Both sides extract MobileNetV2 penultimate features of the same Oxford-IIIT Pet images in the
same process. Because the CPU is shared, the images are cut into chunks and the methods take
turns on each chunk (the order rotating every round), so load changes hit all methods alike;
the figure of merit is the ratio of images/s. Feature agreement is the cosine similarity of
the L2-normalized features of each image against the plain fp32 loop.

    .venv/bin/python benchmarks/bench_extract.py --data-root ../shared/data --images 256 --chunks 4

Methods:
  plain         torchvision transforms in a Dataset, DataLoader(batch_size=64), fp32, contiguous
  cnnlab-fp32      cnnlab.probe.extract: threaded decoding, batch 16, channels_last, fp32
  cnnlab-2streams  as `cnnlab`, but two concurrent single-threaded inference streams (ablation)
  cnnlab           the default: precision 'auto' (bf16 where faithful), batch 16, one stream
"""

from __future__ import annotations

import argparse
import json
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--images", type=int, default=256, help="test images used (from the start of the split)")
    ap.add_argument("--chunks", type=int, default=4, help="rounds; each method extracts one chunk per round")
    ap.add_argument("--batch-size", type=int, default=16)
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

    methods = {
        "plain": lambda c: F.normalize(plain_features(model, c), dim=1),
        "cnnlab-fp32": lambda c: extract_features(model, c, batch_size=args.batch_size, precision="fp32").features,
        "cnnlab-2streams": lambda c: extract_features(model, c, batch_size=args.batch_size, precision=precision,
                                                      calibrate=False, streams=2).features,
        "cnnlab": lambda c: extract_features(model, c, batch_size=args.batch_size, precision=precision,
                                             calibrate=False).features,
    }
    for fn in methods.values():  # warm-up: kernels, allocator, file cache
        fn(paths[:8])
    seconds = {k: 0.0 for k in methods}
    feats: dict[str, list] = {k: [None] * args.chunks for k in methods}
    rounds = []
    names = list(methods)
    for r, chunk in enumerate(chunks):
        order = names[r % len(names):] + names[: r % len(names)]
        row = {}
        for name in order:
            t = time.perf_counter()
            feats[name][r] = methods[name](chunk)
            row[name] = time.perf_counter() - t
            seconds[name] += row[name]
        rounds.append({k: len(chunk) / v for k, v in row.items()})
        print(f"round {r}: " + "  ".join(f"{k} {len(chunk) / v:6.1f} img/s" for k, v in row.items()), flush=True)

    ref = torch.cat(feats["plain"])
    out = {"images": len(paths), "chunks": args.chunks, "precision_auto": precision, "calibration_seconds": calib_s,
           "calibration_agreement": vars(agreement) if agreement else None, "torch_threads": torch.get_num_threads(),
           "methods": {}}
    for name in methods:
        f = torch.cat(feats[name])
        cos = (f * ref).sum(dim=1)
        ratios = sorted(rd[name] / rd["plain"] for rd in rounds)
        out["methods"][name] = {
            "images_per_second": len(paths) / seconds[name],
            "speedup_vs_plain": seconds["plain"] / seconds[name],
            "median_round_speedup": ratios[len(ratios) // 2],
            "cosine_vs_plain_min": float(cos.min()), "cosine_vs_plain_mean": float(cos.mean()),
        }
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
