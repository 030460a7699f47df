"""Training throughput: cnnlab's engine vs a plain PyTorch loop, same model, same run.

Sides (``--sides``, any subset containing ``plain``):
  plain                  a map-style Dataset of PIL images + DataLoader (shuffle, ``--workers``,
                         0 by default) + torchvision transforms (RandomCrop(32, padding=4),
                         RandomHorizontalFlip, ToTensor, Normalize) + an fp32 forward/backward/SGD
                         step of the same network
  plain-bf16             the same loop with its forward under bf16 autocast
  cnnlab                 ``cnnlab.train.loop.train_epoch`` (uint8 tensors in memory, batched tensor
                         augmentation) in ``--precision`` (auto: bf16 autocast on AVX512-BF16 CPUs)
  cnnlab-fp32            the same engine in fp32
  cnnlab-default-malloc  cnnlab without its malloc setting (cnnlab.train.heap)
  cnnlab-previous        cnnlab with the model's recipe before Muon (PREVIOUS below: Nesterov SGD for
                         every parameter, and its old batch size and lookahead), to check that the
                         validation-chosen recipes cost no more per epoch

The sides take turns in rounds (the order rotating every round), each round of each side in a
fresh process (a warm-up epoch, then a timed one), so load on the machine hits them all alike.
Reported: each side's images/s per round, best and median; the median of the per-round ratios to
``plain`` (fp32), and to the like-for-like plain side, the one that ran in the same precision
(bf16 with bf16, fp32 with fp32): that one separates the engine from the precision.

Usage: python benchmarks/bench_train.py [--model hw-mish] [--images 2048] [--batch-size 256] [--rounds 3]
       [--sides plain,plain-bf16,cnnlab,cnnlab-fp32] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


SIDES = ("plain", "plain-bf16", "cnnlab", "cnnlab-fp32", "cnnlab-default-malloc", "cnnlab-previous")
# What changed in each model's recipe when Muon became its optimizer (benchmarks/RESULTS.md)
PREVIOUS = {"hw-mish": dict(optimizer="sgd", lookahead=False),
            "hw-mish-bn": dict(optimizer="sgd"),
            "improved": dict(optimizer="sgd", batch_size=1024, lookahead=True)}
DEFAULT_SIDES = "plain,plain-bf16,cnnlab,cnnlab-fp32"


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


def plain_epoch(model: nn.Module, loader: DataLoader, opt: torch.optim.Optimizer, precision) -> int:
    """One epoch of the textbook loop; ``precision`` (cnnlab.train.loop.Precision) sets autocast
    and the memory layout of the batches (the model must already be in that layout)."""
    model.train()
    seen = 0
    for x, y in loader:
        if precision.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)  # B, 3, 32, 32
        with precision.autocast("cpu"):
            loss = nn.functional.cross_entropy(model(x).float(), y)
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
    from cnnlab.precision import Precision, for_training
    from cnnlab.train import heap
    from cnnlab.train.config import Config
    from cnnlab.train.loop import train_epoch
    from cnnlab.train.state import TrainState

    torch.manual_seed(0)
    train = cifar10.load(args.data_root, verify_md5=False).train.head(args.images)
    if args.side.startswith("plain"):
        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
        loader = DataLoader(PILCifar(train.images, train.labels, tf), batch_size=args.batch_size, shuffle=True,
                            num_workers=args.workers, drop_last=True)
        model = build(args.model)
        model.normalize = nn.Identity()  # the transforms normalize
        # plain-bf16 runs in the cnnlab side's layout (channels_last for improved), so the two pair up
        layout = for_training(args.precision, args.model, "cpu").channels_last
        precision = Precision(bf16=True, channels_last=layout) if args.side == "plain-bf16" else Precision(False, False)
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

        def epoch() -> int:
            return plain_epoch(model, loader, opt, precision)
    else:
        if args.side != "cnnlab-default-malloc":  # the ablation keeps glibc's default malloc
            heap.keep_freed_memory()  # as cnnlab train does on the CPU (--tune-heap)
        changes = PREVIOUS[args.model] if args.side == "cnnlab-previous" else {}
        recipe = Config.from_flat(model=args.model, lr=0.01, epochs=4, **{"batch_size": args.batch_size, **changes}).recipe
        model = build(args.model)
        precision = for_training("fp32" if args.side == "cnnlab-fp32" else args.precision, args.model, "cpu")
        if precision.channels_last:  # as cnnlab.train.experiment does
            model = model.to(memory_format=torch.channels_last)
        state = TrainState.create(model, recipe, seed=0, images=len(train))

        def epoch() -> int:
            state.epoch = state.step = 0  # every timed epoch is the schedule's first (of 4)
            return train_epoch(state, train, ctx=Context(), precision=precision).images

    epoch()  # warm-up: oneDNN primitive caches, the allocator
    t = time.perf_counter()
    n = epoch()
    return {"images_per_s": n / (time.perf_counter() - t), "threads": torch.get_num_threads(),
            "precision": {"bf16": precision.bf16, "channels_last": precision.channels_last}}


def run_side(args: argparse.Namespace, side: str) -> dict:
    """Measure ``side`` in a fresh process (this script with ``--side``); its JSON result."""
    argv = [sys.executable, __file__, "--side", side] + [
        a for k, v in vars(args).items() if k not in ("side", "sides", "json", "rounds") and v is not None
        for a in (f"--{k.replace('_', '-')}", str(v))]
    return json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])


def like_for_like(precisions: dict[str, dict]) -> dict[str, str]:
    """Each non-plain side's baseline: the plain side that ran in the same precision and layout."""
    plains = [s for s in precisions if s.startswith("plain")]
    return {side: base for side in precisions if not side.startswith("plain")
            for base in plains if precisions[base] == precisions[side]}


def summarize(rounds: list[dict], precisions: dict[str, dict]) -> dict:
    """Best and median images/s per side; ratios to ``plain`` and to the like-for-like baseline,
    as best / best and as the median of the per-round ratios."""
    rate = {(x["round"], x["loop"]): x["images_per_s"] for x in rounds}
    n_rounds = 1 + max(x["round"] for x in rounds)
    per_side = {side: [rate[r, side] for r in range(n_rounds)] for side in precisions}
    pairs = like_for_like(precisions)

    def ratios(side: str, base: str) -> dict:
        return {"baseline": base, "best_ratio": max(per_side[side]) / max(per_side[base]),
                "median_round_ratio": statistics.median([rate[r, side] / rate[r, base] for r in range(n_rounds)])}

    return {"precision": precisions,
            "best_images_per_s": {s: max(v) for s, v in per_side.items()},
            "median_images_per_s": {s: statistics.median(v) for s, v in per_side.items()},
            "vs_plain": {s: ratios(s, "plain") for s in per_side if s != "plain"},
            "like_for_like": {s: ratios(s, b) for s, b in pairs.items()}}


def print_summary(summary: dict) -> None:
    for side, prec in summary["precision"].items():
        name = ("bf16" if prec["bf16"] else "fp32") + (" channels_last" if prec["channels_last"] else "")
        print(f"{side:22s} {name:18s} best {summary['best_images_per_s'][side]:7.1f}  "
              f"median {summary['median_images_per_s'][side]:7.1f} images/s")
    for key, title in (("vs_plain", "vs plain (fp32)"), ("like_for_like", "like for like (same precision)")):
        for side, r in summary[key].items():
            print(f"{side} {title}: / {r['baseline']}: median of per-round ratios {r['median_round_ratio']:.2f}x, "
                  f"best/best {r['best_ratio']:.2f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hw-mish")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loops")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="the cnnlab side's")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    ap.add_argument("--sides", default=DEFAULT_SIDES, help="what to compare: 'plain' plus any of "
                    + ", ".join(SIDES[1:]) + "; the order rotates every round")
    ap.add_argument("--side", choices=SIDES, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:  # a child: measure one side, print one JSON line
        print(json.dumps(measure(args)), flush=True)
        return

    # Each round runs each side in a fresh process, so neither inherits the other's process-wide
    # state (cnnlab's engine, for one, sets malloc to keep freed memory: cnnlab.train.heap).
    sides = args.sides.split(",")
    if "plain" not in sides or not set(sides) <= set(SIDES):
        ap.error(f"--sides: 'plain' plus any of {', '.join(SIDES[1:])}")
    rounds, precisions = [], {}
    for r in range(args.rounds):
        for side in sides[r % len(sides):] + sides[:r % len(sides)]:
            res = run_side(args, side)
            precisions[side] = res["precision"]
            rounds.append({"round": r, "loop": side, "images_per_s": res["images_per_s"]})
            print(f"round {r} {side:22s} {res['images_per_s']:8.1f} images/s", flush=True)
    summary = summarize(rounds, {s: precisions[s] for s in sides})
    print_summary(summary)
    out = {"model": args.model, "batch_size": args.batch_size, "images": args.images, "workers": args.workers,
           "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           **summary, "rounds": rounds}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
