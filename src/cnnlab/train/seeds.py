"""Train one recipe with K seeds and summarize it as mean ± standard deviation.

Each seed is an ordinary ``cnnlab train`` run in ``<out>/seed-<s>`` (seeds ``--seed`` ..
``--seed + K - 1``), so an interrupted sweep resumes seed by seed and finished seeds are reused.
The spread is the sample standard deviation (n - 1) over the seeds; with one seed it is 0.

Example: cnnlab train-seeds --model improved --seeds 3 --out runs/train/improved-3seeds
"""

from __future__ import annotations

import dataclasses
import statistics
from dataclasses import dataclass
from pathlib import Path

from cnnlab.options import arg
from cnnlab.runs import new_run_dir, write_json
from cnnlab.train import experiment
from cnnlab.train.config import Config as TrainConfig

METRICS = ("test_accuracy", "test_accuracy_plain", "test_loss", "val_accuracy", "val_accuracy_plain", "train_seconds")


@dataclass(kw_only=True)
class Config(TrainConfig):
    """Train a CIFAR-10 network with several seeds; every training option applies to each seed."""

    seeds: int = arg(3, "number of seeds: --seed, --seed + 1, ...")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.seeds < 1:
            raise ValueError(f"--seeds must be at least 1, got {self.seeds}")
        if self.resume is not None:
            raise ValueError("train-seeds resumes by itself: run the same command again with the same --out")


@dataclass
class Result:
    out: Path
    model: str
    runs: list[experiment.Result]
    mean: dict[str, float]
    std: dict[str, float]


def summarize(runs: list[experiment.Result]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean, sample standard deviation) of every metric of ``METRICS`` that all runs have."""
    mean, std = {}, {}
    for name in METRICS:
        values = [getattr(r, name) for r in runs]
        if any(v is None for v in values):
            continue
        mean[name] = statistics.fmean(values)
        std[name] = statistics.stdev(values) if len(values) > 1 else 0.0
    return mean, std


def run(config: Config) -> Result:
    out = new_run_dir("train-seeds", config.out)
    base = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    runs = [experiment.run(TrainConfig(**{**base, "seed": config.seed + i, "out": out / f"seed-{config.seed + i}"}))
            for i in range(config.seeds)]
    mean, std = summarize(runs)
    write_json(out / "summary.json", dict(model=config.model, seeds=[r.run_dir.name for r in runs],
                                          runs=[str(r.run_dir) for r in runs], mean=mean, std=std))
    return Result(out=out, model=config.model, runs=runs, mean=mean, std=std)


def present(result: Result) -> int:
    for r in result.runs:
        experiment.present(r)
    m, s = result.mean, result.std
    line = f"{result.model} over {len(result.runs)} seeds: test accuracy {m['test_accuracy']:.2%} ± {s['test_accuracy']:.2%}"
    if "val_accuracy" in m:
        line += f", validation {m['val_accuracy']:.2%} ± {s['val_accuracy']:.2%}"
    print(line + f", {m['train_seconds']:.0f} s training per seed")
    print(f"summary: {result.out / 'summary.json'}")
    return 0
