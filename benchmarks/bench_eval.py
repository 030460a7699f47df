"""How fast does the trainer evaluate a CIFAR-10 net: memory layout and batch size, one change at a time.

``cnnlab train`` evaluates the test set (and the validation split) after every epoch and with
test-time augmentation (6 forward passes per image) at the end; in the full report that is about a
tenth of the CIFAR-10 time. This script times the trainer's own ``evaluate`` on ``--images``
random images of each net, in the variants

* ``train-layout@1000``: the net's training precision (``--precision``, default auto, on this
  machine) at batch 1000 (the baseline: how the trainer evaluated before ``Precision.for_inference``);
* ``train-layout@250``: only the batch size changed;
* ``channels_last@1000``: only the layout changed: what the trainer runs now (``Precision.for_inference``);
* ``channels_last@250``: both changed.

Variants take turns within each round (the order rotates); reported: ms per image per round,
the best, and the baseline's best / the variant's best (above 1: faster).

Usage: python benchmarks/bench_eval.py [--models hw-mish,hw-mish-bn,improved] [--precision auto]
       [--images 4000] [--rounds 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from cnnlab.data.cifar10 import Split
from cnnlab.distributed import Context
from cnnlab.models.cifar import build
from cnnlab.precision import cpu_has_bf16, for_training
from cnnlab.train.heap import keep_freed_memory
from cnnlab.train.loop import evaluate

VARIANTS = {  # name -> (channels_last for inference, batch size)
    "train-layout@1000": (False, 1000),
    "train-layout@250": (False, 250),
    "channels_last@1000": (True, 1000),
    "channels_last@250": (True, 250),
}
BASELINE = "train-layout@1000"


def ms_per_image(name: str, variant: str, data: Split, choice: str) -> float:
    """Milliseconds per image of one ``evaluate`` pass over ``data`` (after a warm-up batch)."""
    inference, batch_size = VARIANTS[variant]
    precision = for_training(choice, name, "cpu")
    precision = precision.for_inference() if inference else precision
    model = build(name)
    ctx = Context()
    warm = Split(data.images[:batch_size], data.labels[:batch_size])
    evaluate(model, warm, ctx=ctx, precision=precision, batch_size=batch_size)
    t0 = time.perf_counter()
    evaluate(model, data, ctx=ctx, precision=precision, batch_size=batch_size)
    return (time.perf_counter() - t0) * 1e3 / len(data)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="hw-mish,hw-mish-bn,improved")
    ap.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"), help="as cnnlab train's")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the measurements here")
    args = ap.parse_args()
    keep_freed_memory()  # as cnnlab train does on the CPU
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, AVX512-BF16: {cpu_has_bf16()}")
    g = torch.Generator().manual_seed(0)
    data = Split(torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g),
                 torch.randint(0, 10, (args.images,), generator=g))
    order = list(VARIANTS)
    results: dict[str, dict[str, list[float]]] = {}
    for name in args.models.split(","):
        per = results[name] = {v: [] for v in order}
        for r in range(args.rounds):
            for v in order[r % len(order):] + order[:r % len(order)]:
                per[v].append(ms_per_image(name, v, data, args.precision))
                print(f"  {name} round {r} {v}: {per[v][-1]:.3f} ms/image", flush=True)
        base = min(per[BASELINE])
        print(f"\n{name} ({for_training(args.precision, name, 'cpu')}): ms/image per round, best, {BASELINE}'s best / best")
        for v, xs in per.items():
            print(f"  {v:20s} {', '.join(f'{x:6.3f}' for x in xs)}   best {min(xs):6.3f}   {base / min(xs):.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu_capability": torch.backends.cpu.get_cpu_capability(), "avx512_bf16": cpu_has_bf16(),
                       "threads": torch.get_num_threads(), "precision": args.precision, "images": args.images,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
