"""Alternating flip: does choosing the mirrored images from a fixed mask cost time?

The trainer's batch augmentation (reflect-padded random translate, then horizontal flip) is
timed two ways on the same batches, in alternating rounds in one process:

* random flip (the baseline): a fresh coin per image;
* alternating flip (``--alternate-flip``): the images of a fixed random half mirrored in even
  epochs, the other half in odd ones, looked up by their index in the training set.

Both are also set against one full training step of ``improved`` (forward + backward + SGD at
the recipe's batch size), so the difference can be read as a share of an epoch. Accuracy is
not measured here: that takes full runs (``benchmarks/RESULTS.md``).

Usage: python benchmarks/bench_alternate_flip.py [--batch-size 1024] [--rounds 30]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench_precision import steps_per_second  # benchmarks/ is on sys.path when run as a script
from cnnlab.data import cifar10
from cnnlab.precision import Precision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--train-steps", type=int, default=3, help="training steps timed for scale")
    args = parser.parse_args()
    torch.manual_seed(0)
    N, B = 50_000, args.batch_size
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)
    base = torch.rand(N, generator=g) < 0.5

    def random_flip() -> torch.Tensor:
        idx = torch.randperm(N, generator=g)[:B]
        return cifar10.augment(images[idx], translate=2, flip=True, generator=g)

    flips = cifar10.alternating_flips(base, 1)  # once per epoch in the trainer

    def alternating_flip() -> torch.Tensor:
        idx = torch.randperm(N, generator=g)[:B]
        return cifar10.augment(images[idx], translate=2, flip=True, generator=g, flip_mask=flips[idx])

    times: dict[str, list[float]] = {"random flip": [], "alternating flip": []}
    fns = {"random flip": random_flip, "alternating flip": alternating_flip}
    for fn in fns.values():
        fn()  # warm-up
    for _ in range(args.rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)

    # the trainer's step on this CPU (fp32 + channels_last, what ``auto`` picks without AVX512-BF16)
    step = B / steps_per_second("improved", Precision(bf16=False, channels_last=True), random_flip(),
                                torch.randint(0, 10, (B,), generator=g), args.train_steps)

    base_t = min(times["random flip"])
    print(f"batch {B}, best of {args.rounds} alternating rounds, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {torch.backends.cpu.get_cpu_capability()}")
    for name, ts in times.items():
        t = min(ts)
        print(f"{name:>17}: {1e3 * t:7.2f} ms per batch ({t / base_t:.3f}x the random flip, "
              f"{100 * t / step:.2f} % of a training step)")
    print(f"{'improved step':>17}: {1e3 * step:7.1f} ms (fp32, channels_last; mean of {args.train_steps} "
          f"after a warm-up step)")


if __name__ == "__main__":
    main()
