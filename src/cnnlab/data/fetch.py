"""Download a data set into the data root and verify it (or just verify a local copy).

The data root is --data-root, else $CNNLAB_DATA_ROOT, else ../shared/data when it exists,
else ~/.cache/cnnlab/data. CIFAR-10 is the official binary archive (MD5-checked), and the six
unpacked files are checked against their published MD5 sums. `fetch` first names any file that
fails its MD5, and replaces it only with a downloaded copy that passed: a failed download changes
nothing.

Example: cnnlab data fetch cifar10 --data-root ~/data
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cnnlab.data import data_root
from cnnlab.options import arg

DATASETS = ("cifar10",)


@dataclass(kw_only=True)
class Config:
    action: str = arg(help="what to do", positional=True, choices=("fetch", "verify"))
    dataset: str = arg(help="which data set", positional=True, choices=DATASETS)
    data_root: Path | None = arg(None, "folder that holds the data sets (see above)")
    quiet: bool = arg(False, "only print results and errors")


@dataclass
class Result:
    dataset: str
    folder: Path
    verified: bool


def run(config: Config) -> Result:
    from cnnlab.data import cifar10

    if config.action == "fetch":
        folder = cifar10.fetch(config.data_root)
    else:
        folder = data_root(config.data_root) / cifar10.FOLDER
        cifar10.verify(folder)
    return Result(config.dataset, folder, True)


def present(result: Result) -> int:
    print(f"{result.dataset}: {result.folder} (all files match their published MD5 sums)")
    return 0
