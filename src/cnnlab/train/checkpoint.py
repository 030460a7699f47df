"""Atomic checkpoints: written to a temporary file and renamed, read with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled
objects), so ``torch.load(weights_only=True)`` always suffices and loading one runs no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from cnnlab.errors import CnnlabError
from cnnlab.runs import atomic_write

CHECKPOINT = "checkpoint.pt"  # the latest finished epoch (model, optimizer, RNG, history)
WEIGHTS = "model.pt"          # the final weights alone (a state_dict)


def save(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (a crash leaves the previous file intact).

    torch writes through a Python file object here, so a full disk raises ``OSError`` (ENOSPC)
    like every other write, instead of the ``RuntimeError`` its own file writer raises.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            torch.save(state, fh)

    return atomic_write(path, write)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save` (never unpickles arbitrary objects)."""
    path = Path(path)
    if not path.is_file():
        raise CnnlabError(f"no checkpoint at {path}: the run has not finished an epoch yet; start it again")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # truncated or foreign files raise several types
        raise CnnlabError(f"cannot read checkpoint {path} ({exc}); start the run again") from exc


def load_model(run_dir: str | Path, device: str = "cpu"):
    """The trained network of a finished (or interrupted) ``cnnlab train`` run, in eval mode."""
    from cnnlab.models.cifar import build
    from cnnlab.runs import read_json

    run_dir = Path(run_dir)
    name = read_json(run_dir / "config.json")["model"]
    model = build(name)
    if (run_dir / WEIGHTS).is_file():
        state = load(run_dir / WEIGHTS, device)
    else:
        state = load(run_dir / CHECKPOINT, device)["model"]
    model.load_state_dict(state)
    return model.to(device).eval()
