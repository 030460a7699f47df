"""List the model registry: ImageNet-pretrained torchvision classifiers (and whether their
weights are available offline in the torch hub cache) and cnnlab's own CIFAR-10 networks
with their parameter counts.

Example: cnnlab models --all
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cnnlab.options import arg
from cnnlab.models import pretrained


@dataclass(kw_only=True)
class Config:
    all: bool = arg(False, "list every torchvision classifier, not only those with weights available offline")
    quiet: bool = arg(False, "no log output")


@dataclass
class Entry:
    name: str
    kind: str  # "imagenet" or "cifar10"
    weights: str
    available: bool
    detail: str  # cache path or parameter count


@dataclass
class Result:
    entries: list[Entry] = field(default_factory=list)
    hidden: int = 0


def cifar_entries() -> list[Entry]:
    """Entries for the CIFAR-10 networks of :data:`cnnlab.models.cifar.MODELS`."""
    from cnnlab.models import cifar

    out = []
    for name in cifar.MODELS.names():
        net = cifar.build(name)
        n = sum(p.numel() for p in net.parameters())
        out.append(Entry(name, "cifar10", "trained with `cnnlab train`", True, f"{n:,} parameters"))
    return out


def run(config: Config) -> Result:
    result = Result()
    for name in pretrained.classifier_names():
        spec = pretrained.resolve(name)
        if spec.available_offline or config.all:
            result.entries.append(Entry(name, "imagenet", f"{type(spec.weights).__name__}.{spec.weights.name}",
                                        spec.available_offline, str(spec.cache_path)))
        else:
            result.hidden += 1
    result.entries.extend(cifar_entries())
    return result


def present(result: Result) -> int:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="cnnlab models")
    for col in ("name", "dataset", "weights", "available", "where / size"):
        table.add_column(col)
    for e in result.entries:
        table.add_row(e.name, e.kind, e.weights, "yes" if e.available else "no (needs download)", e.detail)
    Console().print(table)
    if result.hidden:
        print(f"{result.hidden} more torchvision ImageNet classifiers work once their weights are "
              "downloaded (internet) or copied into the torch hub cache; `cnnlab models --all` lists them.")
    return 0
