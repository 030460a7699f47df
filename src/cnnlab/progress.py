"""Logging set-up and rich progress bars (hidden with --quiet or when not INFO-verbose)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_console = None


def console():
    """The shared rich console (stderr, so stdout stays clean for --json)."""
    global _console
    if _console is None:
        from rich.console import Console

        _console = Console(stderr=True)
    return _console


def setup_logging(quiet: bool = False) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else logging.INFO
    root = logging.getLogger("cnnlab")
    root.handlers[:] = [RichHandler(console=console(), show_path=False, show_time=False, markup=False)]
    root.setLevel(level)
    root.propagate = False


def progress_enabled() -> bool:
    if os.environ.get("CNNLAB_NO_PROGRESS"):
        return False
    return logging.getLogger("cnnlab").isEnabledFor(logging.INFO) and console().is_terminal


def make_progress():
    """A rich Progress with description, bar, counts, rate, elapsed and ETA columns."""
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("ETA"),
        TimeRemainingColumn(), console=console(), disable=not progress_enabled(), transient=False,
    )


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate with a progress bar (a no-op wrapper when progress is disabled)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with make_progress() as progress:
        task = progress.add_task(description, total=total, info="")
        for item in items:
            yield item
            progress.advance(task)
