"""Which precision and memory layout train each CIFAR-10 net fastest on this CPU?

``--precision auto`` picks bf16 autocast and/or channels_last per model from ``CPU_AUTO`` in
``cnnlab.train.loop``; this script measures the choices that table is based on, on the machine
at hand: one training step (forward, backward, SGD) of each model at its recipe's batch size in

* fp32, NCHW (the baseline, always measured in the same round);
* fp32, channels_last;
* bf16 autocast, NCHW;
* bf16 autocast, channels_last;
* fp32 + ``torch.compile`` (inductor), NCHW: does fusing the elementwise work (Mish, BatchNorm,
  pooling: about a third of hw-mish-bn's step in eager fp32) pay for itself? The compilation
  (tens of seconds, once per process) is timed apart from the steps.

Variants take turns within each round (the order rotates), so load on the machine hits them all
alike; the report gives images/s per round, the best, and best / fp32-NCHW's best.

On a CPU without AVX512-BF16, bf16 is emulated and very slow (hw-mish-bn: 0.09x fp32 on an
AVX2 machine): ``--variants fp32,fp32+channels_last`` skips it. ``fp32+compile`` is measured
only when asked for (``--variants fp32,fp32+compile``).

Usage: python benchmarks/bench_precision.py [--models hw-mish,hw-mish-bn,improved] [--rounds 3] [--steps 3]
       [--variants fp32,fp32+channels_last,bf16,bf16+channels_last,fp32+compile] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F

from cnnlab.models.cifar import build
from cnnlab.train.config import RECIPES
from cnnlab.train.heap import keep_freed_memory
from cnnlab.precision import Precision, cpu_has_bf16
from cnnlab.train.loop import make_optimizer

VARIANTS = {
    "fp32": Precision(bf16=False, channels_last=False),
    "fp32+channels_last": Precision(bf16=False, channels_last=True),
    "bf16": Precision(bf16=True, channels_last=False),
    "bf16+channels_last": Precision(bf16=True, channels_last=True),
    "fp32+compile": Precision(bf16=False, channels_last=False),
}
DEFAULT_VARIANTS = ("fp32", "fp32+channels_last", "bf16", "bf16+channels_last")


class Compiled:
    """The compiled model of each net, built once (compiling again every round would time the
    compiler, not the step); ``seconds`` is each one's first call, where the compilation happens."""

    def __init__(self) -> None:
        self.models: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}
        self.seconds: dict[str, float] = {}


def steps_per_second(name: str, precision: Precision, images: torch.Tensor, labels: torch.Tensor,
                     steps: int, compiled: Compiled | None = None) -> float:
    """Images/s of ``steps`` training steps after one warm-up step, on a fresh model (with
    ``compiled``: on the net's one compiled model, so that only its first call compiles)."""
    recipe = RECIPES[name]
    if compiled is not None and name in compiled.models:
        model, net = compiled.models[name]
    else:
        model = build(name)
        model.init_from_data(images.float().div(255))
        if precision.channels_last:
            model = model.to(memory_format=torch.channels_last)
        net = torch.compile(model) if compiled is not None else model
    opt = make_optimizer(model, recipe)
    model.train()

    def step() -> None:
        x = precision.images(images)  # B, 3, 32, 32
        with precision.autocast("cpu"):
            loss = F.cross_entropy(net(x).float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    t0 = time.perf_counter()
    step()  # warm-up: oneDNN primitive creation, allocator (and the compilation)
    if compiled is not None and name not in compiled.models:
        compiled.models[name] = (model, net)
        compiled.seconds[name] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(labels) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="hw-mish,hw-mish-bn,improved")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant and round")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                    help="comma-separated subset of " + ", ".join(VARIANTS) + " (fp32 is always measured)")
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    keep_freed_memory()  # as cnnlab train does on the CPU (--tune-heap)
    bf16_isa = cpu_has_bf16()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AVX512-BF16: {bf16_isa}")
    results: dict[str, dict[str, list[float]]] = {}
    compiled = Compiled()
    for name in args.models.split(","):
        B = RECIPES[name].batch_size
        g = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=g)
        labels = torch.randint(0, 10, (B,), generator=g)
        order = ["fp32"] + [v for v in args.variants.split(",") if v != "fp32"]
        unknown = set(order) - set(VARIANTS)
        if unknown:
            ap.error(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
        per = results[name] = {v: [] for v in order}
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[:r % len(order)]:
                per[v].append(steps_per_second(name, VARIANTS[v], images, labels, args.steps,
                                               compiled if v.endswith("compile") else None))
                print(f"  {name} round {r} {v}: {per[v][-1]:.1f} images/s", flush=True)
        base = max(per["fp32"])
        print(f"\n{name} (batch {B}): images/s per round, best, best / fp32's best")
        for v, xs in per.items():
            print(f"  {v:20s} {', '.join(f'{x:6.1f}' for x in xs)}   best {max(xs):6.1f}   {max(xs) / base:.2f}x")
        if name in compiled.seconds:
            print(f"  (torch.compile: first step, compilation included, {compiled.seconds[name]:.1f} s)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "avx512_bf16": bf16_isa,
                       "threads": torch.get_num_threads(), "results": results,
                       "compile_seconds": compiled.seconds}, f, indent=1)


if __name__ == "__main__":
    main()
