"""Datasets: where they live on disk and how they are read.

The data root is resolved in this order: an explicit ``--data-root``; the environment
variable ``CNNLAB_DATA_ROOT``; ``../shared/data`` when it exists (the development machines'
read-only copies); else ``~/.cache/cnnlab/data``, where downloads go.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "CNNLAB_DATA_ROOT"
SHARED_DATA = Path("../shared/data")
DEFAULT_DOWNLOAD_ROOT = Path.home() / ".cache" / "cnnlab" / "data"


def data_root(explicit: str | Path | None = None) -> Path:
    """The folder that holds (or will hold) the datasets."""
    if explicit is not None:
        return Path(explicit).expanduser()
    if os.environ.get(DATA_ROOT_ENV):
        return Path(os.environ[DATA_ROOT_ENV]).expanduser()
    if SHARED_DATA.is_dir():
        return SHARED_DATA
    return DEFAULT_DOWNLOAD_ROOT


def peppers_path(explicit: str | Path | None = None) -> Path | None:
    """The classic ``peppers.png``, if present: under :func:`data_root`, else the development
    machines' shared copy seen from the working folder or from this checkout; ``None`` if absent."""
    checkout = Path(__file__).resolve().parents[3]  # the repository root in a source checkout
    for candidate in (data_root(explicit) / "peppers.png", SHARED_DATA / "peppers.png",
                      Path("shared/data/peppers.png"), checkout.parent / "shared" / "data" / "peppers.png"):
        if candidate.is_file():
            return candidate
    return None
