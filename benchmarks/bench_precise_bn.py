"""Precise BatchNorm statistics: does re-estimating them after training help a finished run?

During training, BatchNorm's running mean/variance are an exponential average (momentum 0.1)
over the last few dozen augmented batches. "Precise BN" replaces them, after training, with
the exact average over the whole training set, with the weights frozen. This script loads a
finished ``cnnlab train`` run and reports the test accuracy (plain and with the trainer's TTA) of

* the run's own weights and statistics (the baseline, in the same process);
* precise statistics from the clean training images;
* precise statistics from augmented training images (the recipe's translate + flip).

It does not change the run. Since session 6 the trainer does the clean variant itself as the last
step of ``hw-mish-bn``'s recipe (``Recipe.precise_bn``, ``cnnlab.train.loop.precise_bn``); for such
a run the saved weights already carry precise statistics, so compare on a run trained with
``--no-precise-bn``. See ``benchmarks/RESULTS.md``.

Usage: python benchmarks/bench_precise_bn.py runs/train/hw-mish-bn-e60 [--data-root ../shared/data]
"""

from __future__ import annotations

import argparse
import copy

import torch
from torch import nn

from cnnlab.data import cifar10
from cnnlab.distributed import Context
from cnnlab.runs import read_json
from cnnlab.train.checkpoint import load_model
from cnnlab.precision import for_training
from cnnlab.train.loop import evaluate, precise_bn


def with_precise_bn(model: nn.Module, data: cifar10.Split, precision, *, augment: bool, translate: int,
                    seed: int = 0) -> nn.Module:
    """A copy of ``model`` whose BatchNorm statistics are the exact averages over ``data``'s images."""
    model = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    transform = (lambda x: cifar10.augment(x, translate=translate, flip=True, generator=g)) if augment else None
    precise_bn(model, data, precision=precision, transform=transform)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished cnnlab train run folder")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.run)
    config = read_json(f"{args.run}/config.json")
    data = cifar10.load(args.data_root)
    ctx = Context()
    precision = for_training(config["precision"], config["model"], "cpu")
    variants = {
        "as trained": model,
        "precise, clean images": with_precise_bn(model, data.train, precision, augment=False, translate=0),
        "precise, augmented images": with_precise_bn(model, data.train, precision, augment=True,
                                                     translate=config["recipe"]["translate"]),
    }
    print(f"{'statistics':28s} {'test loss':>9s} {'plain':>7s} {'TTA':>7s}")
    for name, m in variants.items():
        loss, plain = evaluate(m, data.test, ctx=ctx, precision=precision)
        tta = evaluate(m, data.test, ctx=ctx, precision=precision, tta=True)[1]
        print(f"{name:28s} {loss:9.4f} {plain:7.2%} {tta:7.2%}")


if __name__ == "__main__":
    main()
