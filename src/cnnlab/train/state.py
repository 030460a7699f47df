"""The training state: everything a run carries from one epoch to the next, and its checkpoint.

A :class:`TrainState` holds the model, its optimizer (SGD, or Muon + SGD), the lookahead average,
the schedule's position (finished epochs, optimizer steps), the RNG that orders and augments the
batches, the per-epoch history, the time spent, and one record per process that trained part of
the run. ``state_dict()`` / ``load_state_dict()`` are its one checkpoint format: a resumed run
continues exactly where the checkpoint left it (with ``--deterministic``, the same final weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.train import checkpoint
from cnnlab.train.config import Recipe
from cnnlab.train.loop import Lookahead, make_optimizer
from cnnlab.train.muon import FilterMuon


@dataclass(eq=False)
class TrainState:
    model: nn.Module
    recipe: Recipe
    optimizer: torch.optim.Optimizer | FilterMuon
    generator: torch.Generator        # batch order and augmentation
    total_steps: int                  # optimizer steps of the whole schedule
    lookahead: Lookahead | None = None
    # alternating flip: the images mirrored in even epochs, drawn from the seed (not saved: recomputed)
    flip_base: torch.Tensor | None = None
    epoch: int = 0                    # finished epochs
    step: int = 0                     # optimizer steps taken
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0        # in training epochs, all processes
    wall_seconds_before: float = 0.0  # wall time of the processes before this one
    processes: list[dict[str, Any]] = field(default_factory=list)  # each: first epoch it trained, where, how
    started: float = field(default_factory=time.perf_counter)  # this process's start (perf_counter)

    @classmethod
    def create(cls, model: nn.Module, recipe: Recipe, *, seed: int, images: int,
               started: float | None = None) -> TrainState:
        """The state before the first step of ``recipe`` on ``images`` training images."""
        steps_per_epoch = images // min(recipe.batch_size, images)
        flip_base = (torch.rand(images, generator=torch.Generator().manual_seed(seed + 1)) < 0.5
                     if recipe.alternate_flip else None)
        return cls(model=model, recipe=recipe, optimizer=make_optimizer(model, recipe),
                   generator=torch.Generator().manual_seed(seed), total_steps=steps_per_epoch * recipe.epochs,
                   lookahead=Lookahead(model) if recipe.lookahead else None, flip_base=flip_base,
                   started=time.perf_counter() if started is None else started)

    @property
    def steps_per_epoch(self) -> int:
        return self.total_steps // self.recipe.epochs

    @property
    def finished(self) -> bool:
        return self.epoch >= self.recipe.epochs

    def wall_seconds(self) -> float:
        """Wall time of the whole run so far: earlier processes plus this one."""
        return self.wall_seconds_before + time.perf_counter() - self.started

    def state_dict(self) -> dict[str, Any]:
        """Tensors, numbers, strings, lists and dicts only (it loads with ``weights_only=True``)."""
        state = dict(model=self.model.state_dict(), optimizer=self.optimizer.state_dict(),
                     generator=self.generator.get_state(), epoch=self.epoch, step=self.step,
                     history=list(self.history), train_seconds=self.train_seconds,
                     wall_seconds=self.wall_seconds(), processes=list(self.processes))
        if self.lookahead is not None:
            state["lookahead"] = self.lookahead.ema
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (this process's start time is kept: its wall time counts from there)."""
        missing = [k for k in self.state_dict_keys() if k not in state]
        if missing:
            raise CnnlabError(f"the checkpoint lacks {', '.join(missing)}: it was written in another format; "
                              f"start the run again in a new folder")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"].cpu())  # a map_location may have moved it
        if self.lookahead is not None:
            self.lookahead.ema = state["lookahead"]
        self.epoch, self.step = state["epoch"], state["step"]
        self.history = list(state["history"])
        self.train_seconds, self.wall_seconds_before = state["train_seconds"], state["wall_seconds"]
        self.processes = list(state["processes"])

    def state_dict_keys(self) -> tuple[str, ...]:
        """The entries of :meth:`state_dict` (``lookahead`` only with the recipe's lookahead)."""
        keys = ("model", "optimizer", "generator", "epoch", "step", "history", "train_seconds", "wall_seconds",
                "processes")
        return keys + ("lookahead",) if self.lookahead is not None else keys

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint atomically (:func:`cnnlab.train.checkpoint.save`)."""
        return checkpoint.save(path, self.state_dict())

    def resume(self, path: str | Path, device: str) -> None:
        """Load the checkpoint at ``path`` (``weights_only=True``), its tensors onto ``device``."""
        self.load_state_dict(checkpoint.load(path, device))
