"""Training throughput: cnnlab's engine vs a plain PyTorch loop, same model, same run.

Reference ("plain"): a map-style Dataset of PIL images + DataLoader (shuffle, num_workers=0 by
default) + torchvision transforms (RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor,
Normalize) + an fp32 forward/backward/SGD step of the same network.
cnnlab: ``cnnlab.train.loop.train_epoch`` (uint8 tensors in memory, batched tensor
augmentation, the model's automatic precision: bf16 autocast on AVX512-BF16 CPUs).

The two are measured in alternating rounds in one process and the best round of each is
kept, so the ratio is robust to other load on the machine.

Usage: python benchmarks/bench_train.py [--model hw-mish] [--images 2048] [--batch-size 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset


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


def main() -> None:
    from torchvision import transforms as T

    from cnnlab.data import cifar10
    from cnnlab.models.cifar import MEAN, STD, build
    from cnnlab.train.config import Config
    from cnnlab.distributed import Context
    from cnnlab.train.loop import make_optimizer, resolve_precision, train_epoch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="hw-mish")
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers of the plain loop")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    torch.manual_seed(0)
    data = cifar10.load(args.data_root, verify_md5=False)
    train = data.train.head(args.images)
    recipe = Config(model=args.model, batch_size=args.batch_size, lr=0.01).recipe()

    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])
    loader = DataLoader(PILCifar(train.images, train.labels, tf), batch_size=args.batch_size, shuffle=True,
                        num_workers=args.workers, drop_last=True)
    ref_model = build(args.model)
    ref_model.normalize = nn.Identity()  # the transforms normalize
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.01, momentum=0.9, nesterov=True)

    model = build(args.model)
    precision = resolve_precision(args.precision, args.model, "cpu")
    opt = make_optimizer(model, recipe)
    gen = torch.Generator().manual_seed(0)
    ctx = Context()
    steps = len(train) // args.batch_size

    def cnnlab_epoch() -> int:
        stats, _ = train_epoch(model, model, train, recipe, opt, epoch=0, step=0, total_steps=steps * 4,
                               generator=gen, ctx=ctx, precision=precision)
        return stats.images

    # warm-up (oneDNN primitive caches, allocator)
    for fn in (lambda: plain_epoch(ref_model, loader, ref_opt), cnnlab_epoch):
        fn()
    best = {"plain": 0.0, "cnnlab": 0.0}
    rounds = []
    for r in range(args.rounds):
        for name, fn in (("plain", lambda: plain_epoch(ref_model, loader, ref_opt)), ("cnnlab", cnnlab_epoch)):
            t = time.perf_counter()
            n = fn()
            rate = n / (time.perf_counter() - t)
            rounds.append({"round": r, "loop": name, "images_per_s": rate})
            best[name] = max(best[name], rate)
            print(f"round {r} {name:7s} {rate:8.1f} images/s", flush=True)
    ratio = best["cnnlab"] / best["plain"]
    out = {"model": args.model, "batch_size": args.batch_size, "images": args.images, "workers": args.workers,
           "precision": {"bf16": precision.bf16, "channels_last": precision.channels_last},
           "threads": torch.get_num_threads(), "best_images_per_s": best, "ratio": ratio, "rounds": rounds}
    print(json.dumps({k: out[k] for k in ("model", "precision", "best_images_per_s", "ratio")}))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
