"""Option dataclasses and the one helper that declares a command-line field.

A verb's options are a dataclass; each field carries its help text (and, if needed, a
positional flag or choices) in its metadata, and ``cli.py`` turns the dataclass into an
argparse parser. ``__post_init__`` rejects impossible values, so the Python API and the
CLI validate the same way.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


def arg(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    positional: bool = False,
    choices: list[str] | tuple[str, ...] | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with command-line metadata."""
    meta = {"help": help, "positional": positional, "choices": choices, "parse": parse, "metavar": metavar}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(kw_only=True)
class RunOptions:
    """Options every experiment shares: where results go, seeds, device, verbosity."""

    out: Path | None = arg(None, "run folder (default: runs/<verb>/<time>-<id>/)")
    seed: int = arg(0, "random seed for Python, NumPy and torch")
    deterministic: bool = arg(False, "use deterministic kernels (slower, bit-reproducible)")
    device: str = arg("auto", "where to compute", choices=("auto", "cpu", "cuda"))
    quiet: bool = arg(False, "only print results and errors (no progress bars)")
