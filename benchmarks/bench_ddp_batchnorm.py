"""What does synchronizing BatchNorm across DDP ranks cost on the CPU?

Run under torchrun (gloo). One training step (forward, backward, SGD) of a BatchNorm network at its
recipe's global batch, each rank on its half, timed two ways in alternating rounds in the same
processes:

* unsynchronized (the baseline): plain ``BatchNorm2d`` under DDP, each rank normalizing its own
  shard (a different update from one process's on the whole batch);
* synchronized: :func:`cnnlab.distributed.wrap`, whose ``CpuSyncBatchNorm`` layers normalize with the
  statistics of the global batch (two all-reduces per layer in the forward pass, two in the backward).

Both in fp32 and in bf16 autocast (``--precision auto`` on a CPU with AVX512-BF16). Rank 0 prints
images/s (the global batch) per round, the best, best / unsynchronized's best, and the ratio within
each round (the two variants ran back to back there; its median resists load from other jobs).

Usage: torchrun --standalone --nproc-per-node 2 benchmarks/bench_ddp_batchnorm.py
       [--models hw-mish-bn,improved] [--rounds 3] [--steps 3] [--precisions fp32,bf16]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from cnnlab import distributed
from cnnlab.models.cifar import build
from cnnlab.train.config import RECIPES
from cnnlab.train.heap import keep_freed_memory
from cnnlab.precision import Precision
from cnnlab.train.loop import make_optimizer

VARIANTS = ("unsynchronized", "synchronized")


def images_per_second(name: str, variant: str, precision: Precision, images: torch.Tensor, labels: torch.Tensor,
                      steps: int, ctx: distributed.Context) -> float:
    """Global-batch images/s of ``steps`` steps after one warm-up step, on a fresh DDP model."""
    torch.manual_seed(0)
    model = build(name)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, ctx) if variant == "synchronized" else DistributedDataParallel(model)
    opt = make_optimizer(model, RECIPES[name])
    model.train()
    x, y = precision.images(ctx.shard(images)), ctx.shard(labels)  # this rank's half

    def step() -> None:
        with precision.autocast("cpu"):
            loss = F.cross_entropy(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN primitives, allocator, DDP buckets
    ctx.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    ctx.barrier()
    return steps * len(labels) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="hw-mish-bn")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--precisions", default="fp32,bf16")
    args = ap.parse_args()
    ctx = distributed.setup("cpu")
    if not ctx.enabled:
        ap.error("run it under torchrun with --nproc-per-node 2 or more")
    keep_freed_memory()
    say = print if ctx.is_main else (lambda *a, **k: None)
    say(f"torch {torch.__version__}, {ctx.world_size} ranks x {torch.get_num_threads()} threads, CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}")
    for name in args.models.split(","):
        B = RECIPES[name].batch_size
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (B,), generator=g)
        for p in args.precisions.split(","):
            precision = Precision(bf16=p == "bf16", channels_last=name == "improved")
            per: dict[str, list[float]] = {v: [] for v in VARIANTS}
            for r in range(args.rounds):
                for v in VARIANTS[r % 2:] + VARIANTS[:r % 2]:  # alternate which goes first
                    per[v].append(images_per_second(name, v, precision, images, labels, args.steps, ctx))
            base = max(per["unsynchronized"])
            say(f"\n{name} {p} (global batch {B}): images/s per round, best, best / unsynchronized's best")
            for v, xs in per.items():
                say(f"  {v:15s} {', '.join(f'{x:6.1f}' for x in xs)}   best {max(xs):6.1f}   {max(xs) / base:.2f}x")
            ratios = [a / b for a, b in zip(per["synchronized"], per["unsynchronized"], strict=True)]
            say(f"  synchronized / unsynchronized in each round: {', '.join(f'{r:.2f}' for r in ratios)}; "
                f"median {statistics.median(ratios):.2f}x")
    distributed.teardown(ctx, wait=True)


if __name__ == "__main__":
    main()
