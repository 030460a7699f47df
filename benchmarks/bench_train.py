"""Training throughput: cnnlab's engine vs a plain PyTorch loop, same model, same run.

Reference ("plain"): a map-style Dataset of PIL images + DataLoader (shuffle, num_workers=0 by
default) + torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize) + an fp32 forward/backward/SGD step of the same network.
cnnlab: ``cnnlab.train.loop.train_epoch`` (uint8 tensors in memory, batched tensor
augmentation, the model's automatic precision: bf16 autocast on AVX512-BF16 CPUs).

The two are measured in alternating rounds, each round of each side in a fresh process (a
warm-up epoch, then a timed one); the best round of each side and the median of the per-round
ratios are reported, so the ratio is robust to other load on the machine.

Usage: python benchmarks/bench_train.py [--model hw-mish] [--images 2048] [--batch-size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


SIDES = ("plain", "cnnlab", "cnnlab-default-malloc")


class PILCifar(Dataset):
    """CIFAR-10 as a list of PIL images (the usual map-style Dataset)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform) -> None:
        from PIL import Image

        self.images = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]  # H, W, 3 uint8
        self.labels = labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def plain_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer) -> int:
    model.train()
    seen = 0
    for x, y in loader:
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += y.shape[0]
    return seen


def measure(args: argparse.Namespace) -> dict:
    """One side (``args.side``) in this process: a warm-up epoch, then a timed one."""
    from torchvision import transforms as T

    from cnnlab.data import cifar10
    from cnnlab.distributed import Context
    from cnnlab.models.cifar import MEAN, STD, build
    from cnnlab.train.config import Config
    from cnnlab.train.loop import make_optimizer, resolve_precision, train_epoch

    torch.manual_seed(0)
    train = cifar10.load(args.data_root, verify_md5=False).train.head(args.images)
    if args.side == "plain":
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
        loader = DataLoader(PILCifar(train.images, train.labels, tf), batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, drop_last=True)
        model = build(args.model)
        model.normalize = nn.Identity()  # the transforms normalize
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        precision = None

        def epoch() -> int:
            return plain_epoch(model, loader, opt)
    else:
        if args.side == "cnnlab-default-malloc":  # ablation: the engine without its malloc setting
            from cnnlab.train import heap

            heap._done = False  # as if already tried and not taken: glibc keeps its defaults
        recipe = Config(model=args.model, batch_size=args.batch_size, lr=0.01).recipe()
        model = build(args.model)
        precision = resolve_precision(args.precision, args.model, "cpu")
        opt = make_optimizer(model, recipe)
        gen = torch.Generator().manual_seed(0)
        steps = len(train) // args.batch_size

        def epoch() -> int:
            stats, _ = train_epoch(model, model, train, recipe, opt, epoch=0, step=0, total_steps=steps * 4,
                                   generator=gen, ctx=Context(), precision=precision)
            return stats.images

    epoch()  # warm-up: oneDNN primitive caches, the allocator
    t = time.perf_counter()
    n = epoch()
    return {"images_per_s": n / (time.perf_counter() - t), "threads": torch.get_num_threads(),
            "precision": None if precision is None else {"bf16": precision.bf16,
                                                         "channels_last": precision.channels_last}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hw-mish")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--sides", default="plain,cnnlab",
                    help="what to compare, in this order each round; cnnlab-default-malloc = cnnlab's engine "
                         "without its malloc setting (cnnlab.train.heap)")
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # a child: measure one side, print one JSON line
        print(json.dumps(measure(args)), flush=True)
        return

    # Each round runs each side in a fresh process, so neither inherits the other's process-wide
    # state (cnnlab's engine, for one, sets malloc to keep freed memory: cnnlab.train.heap).
    sides = args.sides.split(",")
    if "plain" not in sides or not set(sides) <= set(SIDES):
        raise SystemExit(f"--sides: 'plain' plus any of {', '.join(SIDES[1:])}")
    best = dict.fromkeys(sides, 0.0)
    rounds, precision = [], None
    for r in range(args.rounds):
        for side in sides:
            argv = [sys.executable, __file__, "--side", side] + [
                a for k, v in vars(args).items() if k not in ("side", "sides", "json", "rounds") and v is not None
                for a in (f"--{k.replace('_', '-')}", str(v))]
            res = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            rate = res["images_per_s"]
            precision = res["precision"] or precision
            rounds.append({"round": r, "loop": side, "images_per_s": rate})
            best[side] = max(best[side], rate)
            print(f"round {r} {side:7s} {rate:8.1f} images/s", flush=True)
    rate = {(x["round"], x["loop"]): x["images_per_s"] for x in rounds}
    ratio, median = {}, {}
    for side in sides[1:]:
        per_round = sorted(rate[r, side] / rate[r, "plain"] for r in range(args.rounds))
        ratio[side], median[side] = best[side] / best["plain"], per_round[len(per_round) // 2]
        print(f"{side}: best/best {ratio[side]:.2f}x, median of per-round ratios {median[side]:.2f}x")
    out = {"model": args.model, "batch_size": args.batch_size, "images": args.images, "workers": args.workers,
           "precision": precision, "threads": torch.get_num_threads(), "best_images_per_s": best,
           "ratio": ratio, "median_round_ratio": median, "rounds": rounds}
    print(json.dumps({k: out[k] for k in ("model", "precision", "best_images_per_s", "ratio", "median_round_ratio")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
