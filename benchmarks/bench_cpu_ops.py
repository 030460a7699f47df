"""Does ``cnnlab.models.cpu_ops`` (faster CPU Mish and 2x2 max-pool) speed up a training step, and how exact is it?

One training step (forward, backward, the recipe's optimizer) of ``hw-mish`` and ``hw-mish-bn`` at
batch 256 in ``--precision`` (default: what ``auto`` picks here), with the nets' layers swapped one
change at a time:

* ``torch``: ``nn.Mish`` and ``nn.MaxPool2d(2, 2)`` (the baseline, how the nets were built before);
* ``mish``: only cpu_ops' Mish;
* ``pool``: only cpu_ops' channels_last max-pool;
* ``both``: what the nets use now.

cpu_ops takes its own path for bf16 CPU tensors only; with ``--precision fp32`` every variant runs
torch's kernels now (the fp32 numbers in RESULTS.md predate that restriction).

Variants take turns within each round (the order rotates); reported: images/s per round, the best,
and best / the baseline's best. Then the accuracy of the Mish formula against float64 on 16.8 M
normal values (sd 3) in the step's dtype, beside torch's kernel.

Usage: python benchmarks/bench_cpu_ops.py [--models hw-mish,hw-mish-bn] [--precision auto]
       [--rounds 3] [--steps 4] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.models import cpu_ops
from cnnlab.models.cifar import build
from cnnlab.precision import cpu_has_bf16, for_training
from cnnlab.train.config import RECIPES
from cnnlab.train.heap import keep_freed_memory
from cnnlab.train.loop import make_optimizer

VARIANTS = {"torch": (False, False), "mish": (True, False), "pool": (False, True), "both": (True, True)}


def model_with(name: str, variant: str) -> nn.Module:
    """``name`` with torch's Mish / max-pool where ``variant`` does not take cpu_ops' ones."""
    fast_mish, fast_pool = VARIANTS[variant]
    model = build(name)
    for i, layer in enumerate(model.features):
        if isinstance(layer, cpu_ops.Mish) and not fast_mish:
            model.features[i] = nn.Mish()
        elif isinstance(layer, cpu_ops.MaxPool2x2) and not fast_pool:
            model.features[i] = nn.MaxPool2d(2, 2)
    return model


def images_per_second(name: str, variant: str, choice: str, steps: int) -> float:
    torch.manual_seed(0)
    model, precision = model_with(name, variant), for_training(choice, name, "cpu")
    opt = make_optimizer(model, RECIPES[name])
    x8 = torch.randint(0, 256, (256, 3, 32, 32), dtype=torch.uint8)
    y = torch.randint(0, 10, (256,))

    def step() -> None:
        with precision.autocast("cpu"):
            loss = F.cross_entropy(model(precision.images(x8)).float(), y, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up: oneDNN primitives, allocator
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * 256 / (time.perf_counter() - t0)


def mish_errors(dtype: torch.dtype) -> dict[str, float]:
    """Largest relative and mean absolute error against float64 of torch's Mish and cpu_ops'."""
    x = (torch.randn(256, 64, 32, 32, generator=torch.Generator().manual_seed(0)) * 3).to(dtype)
    exact = F.mish(x.double())
    out = {}
    with torch.no_grad():
        for label, y in (("torch", F.mish(x)), ("cpu_ops", cpu_ops.Mish()(x))):
            err = (y.double() - exact).abs()
            out[f"{label}_max_rel"] = (err / (exact.abs() + 1e-3)).max().item()
            out[f"{label}_mean_abs"] = err.mean().item()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="hw-mish,hw-mish-bn")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="as cnnlab train's")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    keep_freed_memory()  # as cnnlab train does on the CPU
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AVX512-BF16: {cpu_has_bf16()}")
    order, results = list(VARIANTS), {}
    for name in args.models.split(","):
        per = results[name] = {v: [] for v in order}
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[:r % len(order)]:
                per[v].append(images_per_second(name, v, args.precision, args.steps))
                print(f"  {name} round {r} {v}: {per[v][-1]:.1f} images/s", flush=True)
        base = max(per["torch"])
        print(f"\n{name} ({for_training(args.precision, name, 'cpu')}): images/s per round, best, best / torch's best")
        for v, xs in per.items():
            print(f"  {v:6s} {', '.join(f'{x:6.1f}' for x in xs)}   best {max(xs):6.1f}   {max(xs) / base:.2f}x")
    dtype = torch.bfloat16 if for_training(args.precision, "hw-mish", "cpu").bf16 else torch.float32
    errors = mish_errors(dtype)
    print(f"\nMish in {dtype} against float64: " + ", ".join(f"{k} {v:.2e}" for k, v in errors.items()))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "avx512_bf16": cpu_has_bf16(),
                       "threads": torch.get_num_threads(), "precision": args.precision, "results": results,
                       "mish_errors": errors}, f, indent=1)


if __name__ == "__main__":
    main()
