"""Train a CIFAR-10 network (hw-mish, hw-mish-bn or improved) and write its run folder.

The whole data set sits in memory as uint8; batches are augmented on tensors. A run is
``prepare`` (data, model, training state), ``fit`` (the epochs) and ``finish`` (final accuracies,
files). Each epoch records train loss/accuracy, test loss/accuracy, learning rate and seconds in
history.json and history.csv, and writes checkpoint.pt (the training state,
``cnnlab.train.state``) atomically; --resume RUN continues an interrupted run (with
--deterministic it ends with the same weights). A folder (--out) that already
holds a finished run with the same options is reused; an unfinished one is resumed.
Figures: loss.png (loss and accuracy per epoch), filters.png (the first-layer filters).
Data-parallel: torchrun --nproc_per_node N -m cnnlab train ... (rank 0 writes; BatchNorm statistics
are synchronized across ranks, see cnnlab.distributed).

Example: cnnlab train --model hw-mish-bn --epochs 20 --out runs/train/bn
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab import distributed
from cnnlab.data import cifar10
from cnnlab.errors import CnnlabError
from cnnlab.models.cifar import build, parameter_count
from cnnlab.precision import Precision, for_training
from cnnlab.progress import make_progress
from cnnlab.runs import new_run_dir, read_json, resolve_device, save_figure, seed_everything, write_json, \
    write_run_metadata, write_text
from cnnlab.train import checkpoint, heap
from cnnlab.train.config import Config, run_key
from cnnlab.train.loop import TrainingDiverged, describe_optimizer, evaluate, precise_bn, train_epoch
from cnnlab.train.state import TrainState

log = logging.getLogger(__name__)

HISTORY_FIELDS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "test_loss", "test_accuracy",
                  "lr", "seconds")


@dataclass
class Result:
    run_dir: Path
    model: str
    epochs: int
    test_accuracy: float            # final, with test-time augmentation when the recipe uses it
    test_accuracy_plain: float      # final, without test-time augmentation
    test_loss: float
    train_seconds: float            # time in training epochs (all processes of a resumed run)
    wall_seconds: float             # training + evaluation + set-up (all processes)
    parameters: int
    init_scheme: str
    optimizer: str
    recipe: dict[str, Any]
    precision: dict[str, bool]
    world_size: int = 1
    history: list[dict[str, float]] = field(default_factory=list)
    # precise BatchNorm statistics (recipe.precise_bn): the plain test loss/accuracy before them
    precise_bn: dict[str, float] | None = None
    # one entry per process that trained part of the run: the first epoch it trained, where and how
    processes: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False            # True when a finished run was reused
    # --val-split: the held-out images' final accuracy (TTA when the recipe uses it) and plain one
    val_images: int = 0
    val_accuracy: float | None = None
    val_accuracy_plain: float | None = None


@dataclass
class Training:
    """One process's share of a run: its options, data, training state and run folder."""

    config: Config
    ctx: distributed.Context
    run_dir: Path
    precision: Precision
    train: cifar10.Split
    val: cifar10.Split | None
    test: cifar10.Split
    net: nn.Module                  # the model, or its DDP wrapper
    state: TrainState

    def evaluate(self, data: cifar10.Split, tta: bool = False) -> tuple[float, float]:
        return evaluate(self.state.model, data, ctx=self.ctx, precision=self.precision.for_inference(), tta=tta)


def config_from_folder(run_dir: Path, current: Config, option: str = "--resume") -> Config:
    """The options a run folder was trained with (its config.json), set to resume or reuse it;
    where it runs (device, threads, quiet, heap, data root when given) comes from ``current``.
    A folder without config.json is an error naming ``option``, the flag that gave the folder."""
    if not (run_dir / "config.json").is_file():
        raise CnnlabError(f"{option} {run_dir}: not a cnnlab train run folder (no config.json)")
    saved = read_json(run_dir / "config.json")
    names = {f.name for f in dataclasses.fields(Config)}
    options = {k: v for k, v in saved.items() if k in names}
    options.update(resume=run_dir, out=run_dir, quiet=current.quiet, device=current.device, threads=current.threads,
                   tune_heap=current.tune_heap)
    if current.data_root is not None:
        options["data_root"] = current.data_root
    return Config(**options)


def _choose_folder(config: Config) -> tuple[Config, Path, str]:
    """(config to use, run folder, mode) with mode 'new', 'resume' or 'cached'."""
    if config.resume is not None:
        run_dir = Path(config.resume)
        cfg = config_from_folder(run_dir, config)
        return cfg, run_dir, "cached" if (run_dir / "result.json").is_file() else "resume"
    run_dir = new_run_dir("train", config.out)
    if (run_dir / "config.json").is_file():
        if read_json(run_dir / "config.json").get("run_key") != run_key(config):
            if (run_dir / checkpoint.CHECKPOINT).is_file():
                raise CnnlabError(f"{run_dir} holds a run with different options; choose another --out "
                                  f"or delete that folder")
            return config, run_dir, "new"
        if (run_dir / "result.json").is_file():
            return config, run_dir, "cached"
        if (run_dir / checkpoint.CHECKPOINT).is_file():
            return dataclasses.replace(config, resume=run_dir), run_dir, "resume"
    return config, run_dir, "new"


def _precision_words(process: dict[str, Any]) -> str:
    p = process.get("precision") or {}
    words = ("bf16 autocast" if p.get("bf16") else "fp32") + (" + channels_last" if p.get("channels_last") else "")
    return f"{words} on {process.get('device')}" + (f" ({process['cpu_capability']})" if process.get("cpu_capability") else "")


def _history_csv(history: list[dict[str, float]]) -> str:
    buf = io.StringIO()
    fields = [f for f in HISTORY_FIELDS if any(f in row for row in history)] or list(HISTORY_FIELDS)
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(history)
    return buf.getvalue()


def _write_figures(run_dir: Path, model, history: list[dict[str, float]], name: str) -> None:
    from cnnlab.plots.training import plot_filters, plot_history

    save_figure(plot_history(history, title=name), run_dir / "loss.png")
    save_figure(plot_filters(model.first_conv.weight.detach().float().cpu(), title=f"{name}: first-layer filters"),
                run_dir / "filters.png")


def run(config: Config) -> Result:
    t_start = time.perf_counter()
    device = resolve_device(config.device)
    ctx = distributed.setup(device)
    try:
        result = _run(config, ctx, t_start)
    except BaseException:
        distributed.teardown(ctx)  # no barrier: a rank that already failed would never reach it
        raise
    # every rank waits for the others before the group goes: destroying a gloo group while a
    # peer still has traffic in flight aborts that peer ("terminate called without an active exception")
    distributed.teardown(ctx, wait=True)
    return result


def _run(config: Config, ctx: distributed.Context, t_start: float) -> Result:
    # rank 0 decides which folder and mode; the other ranks take its decision
    config, run_dir, mode = ctx.broadcast(_choose_folder(config) if ctx.is_main else (None, None, None))
    if mode == "cached":
        log.info("reusing the finished run in %s", run_dir)
        saved = read_json(run_dir / "result.json")
        saved.update(run_dir=run_dir, cached=True)
        return Result(**saved)
    training = prepare(config, ctx, run_dir, resume=mode == "resume", started=t_start)
    fit(training)
    return finish(training)


def _load_data(config: Config, device: str) -> tuple[cifar10.Split, cifar10.Split | None, cifar10.Split]:
    """(train, validation or None, test) on ``device``."""
    data = cifar10.load(config.data_root, verify_md5=config.verify_md5, download=config.download)
    train, test = data.train.head(config.limit_train).to(device), data.test.head(config.limit_test).to(device)
    train, val = train.hold_out(config.val_split, config.seed) if config.val_split else (train, None)
    return train, val, test


def prepare(config: Config, ctx: distributed.Context, run_dir: Path, *, resume: bool, started: float) -> Training:
    """Data, model and training state for this process (loaded from the checkpoint when resuming)."""
    device = ctx.device
    if config.threads:
        torch.set_num_threads(config.threads)
    precision = for_training(config.precision, config.model, device)
    seed_everything(config.seed, config.deterministic)
    train, val, test = _load_data(config, device)
    if config.tune_heap and torch.device(device).type == "cpu":
        heap.keep_freed_memory()
    model = build(config.model)
    model.init_from_data(train.images[:5000].float().div(255).cpu())
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, ctx)  # before the optimizer: it may convert BatchNorm layers in place
    state = TrainState.create(model, config.recipe, seed=config.seed, images=len(train), started=started)
    if resume:
        state.resume(run_dir / checkpoint.CHECKPOINT, device)
        log.info("resuming %s after epoch %d", run_dir, state.epoch)
    state.processes.append(dict(first_epoch=state.epoch + 1, device=device, world_size=ctx.world_size,
                                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                                precision=dataclasses.asdict(precision)))
    training = Training(config, ctx, run_dir, precision, train, val, test, net, state)
    if ctx.is_main:
        _announce(training, new=not resume)
    return training


def _announce(t: Training, *, new: bool) -> None:
    """Rank 0: record a new run (config.json, env.json), warn about a precision change, log the plan."""
    state, config, processes = t.state, t.config, t.state.processes
    n_params = parameter_count(state.model)
    if new:
        record = {**dataclasses.asdict(config), "run_key": run_key(config), "init_scheme": state.model.init_scheme,
                  "parameters": n_params, "precision_resolved": dataclasses.asdict(t.precision),
                  "world_size": t.ctx.world_size}
        write_run_metadata(t.run_dir, record, t.ctx.device, config.seed)
    if len(processes) > 1 and processes[-1]["precision"] != processes[-2]["precision"]:
        log.warning("epochs 1-%d ran with %s, the rest runs with %s (this machine or --device differs): "
                    "result.json lists both under 'processes'", state.epoch, _precision_words(processes[-2]),
                    _precision_words(processes[-1]))
    log.info("%s: %s parameters, %d epochs of %d steps (batch %d), %s, bf16=%s channels_last=%s -> %s",
             config.model, f"{n_params:,}", state.recipe.epochs, state.steps_per_epoch,
             min(state.recipe.batch_size, len(t.train)), t.ctx.device, t.precision.bf16, t.precision.channels_last,
             t.run_dir)


def fit(t: Training) -> None:
    """Train the remaining epochs; after each, rank 0 writes the checkpoint and the history."""
    state, recipe = t.state, t.state.recipe
    with make_progress() as progress:
        task = progress.add_task("train", total=state.steps_per_epoch * (recipe.epochs - state.epoch), info="")

        def on_step(loss: float | None) -> None:
            progress.advance(task)
            if loss is not None:
                progress.update(task, info=f"loss {loss:.3f}")

        while not state.finished:
            progress.update(task, description=f"epoch {state.epoch + 1}/{recipe.epochs}")
            row = _train_epoch(t, on_step if t.ctx.is_main else None)
            if t.ctx.is_main:
                log.info("epoch %d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  %.1fs", row["epoch"],
                         recipe.epochs, row["train_loss"], row["train_accuracy"], row["test_loss"],
                         row["test_accuracy"], row["seconds"])
                state.save(t.run_dir / checkpoint.CHECKPOINT)
                write_json(t.run_dir / "history.json", state.history)
                write_text(t.run_dir / "history.csv", _history_csv(state.history))
            t.ctx.barrier()


def _train_epoch(t: Training, on_step) -> dict[str, float]:
    """One epoch and its evaluation; returns (and appends to the history) its row."""
    state = t.state
    t0 = time.perf_counter()
    try:
        stats = train_epoch(state, t.train, ctx=t.ctx, precision=t.precision, net=t.net, on_step=on_step)
    except TrainingDiverged as exc:
        kept = f"the last good checkpoint (epoch {state.epoch}) is kept in {t.run_dir}" if state.epoch else \
            "no epoch had finished, so there is no checkpoint"
        raise TrainingDiverged(f"{exc}; {kept}. Lower --lr (now {state.recipe.lr}) or use --precision fp32.") from None
    seconds = time.perf_counter() - t0
    state.train_seconds += seconds
    test_loss, test_acc = t.evaluate(t.test)
    row = dict(epoch=state.epoch, train_loss=stats.loss, train_accuracy=stats.accuracy, test_loss=test_loss,
               test_accuracy=test_acc, lr=state.optimizer.param_groups[0]["lr"], seconds=seconds)
    if t.val is not None:
        row["val_loss"], row["val_accuracy"] = t.evaluate(t.val)
    state.history.append(row)
    return row


def _precise_bn(t: Training, test_loss: float, plain_acc: float) -> tuple[dict[str, float] | None, float, float]:
    """With ``recipe.precise_bn``: (note, test loss, plain accuracy) after exact BatchNorm statistics."""
    if not t.state.recipe.precise_bn:
        return None, test_loss, plain_acc
    t0 = time.perf_counter()
    if not precise_bn(t.state.model, t.train, precision=t.precision.for_inference(), ctx=t.ctx):
        return None, test_loss, plain_acc
    note = dict(test_loss_before=test_loss, test_accuracy_before=plain_acc, images=len(t.train))
    test_loss, plain_acc = t.evaluate(t.test)
    note["seconds"] = time.perf_counter() - t0
    if t.ctx.is_main:
        log.info("precise BatchNorm statistics over %d training images: test accuracy %.4f -> %.4f (%.1fs)",
                 len(t.train), note["test_accuracy_before"], plain_acc, note["seconds"])
    return note, test_loss, plain_acc


def finish(t: Training) -> Result:
    """Final accuracies (precise BN, TTA, validation); rank 0 writes model.pt, the figures, result.json."""
    state, recipe = t.state, t.state.recipe
    test_loss, plain_acc = (state.history[-1]["test_loss"], state.history[-1]["test_accuracy"]) if state.history \
        else t.evaluate(t.test)
    bn_note, test_loss, plain_acc = _precise_bn(t, test_loss, plain_acc)
    final_acc = t.evaluate(t.test, tta=True)[1] if recipe.tta else plain_acc
    val_scores = {}
    if t.val is not None:
        # the last epoch measured these weights already, unless precise BN has changed their statistics since
        plain_val = t.evaluate(t.val)[1] if bn_note or not state.history else state.history[-1]["val_accuracy"]
        val_scores = dict(val_images=len(t.val), val_accuracy_plain=plain_val,
                          val_accuracy=t.evaluate(t.val, tta=True)[1] if recipe.tta else plain_val)
    model = state.model
    result = Result(run_dir=t.run_dir, model=t.config.model, epochs=recipe.epochs, test_accuracy=final_acc,
                    test_accuracy_plain=plain_acc, test_loss=test_loss, train_seconds=state.train_seconds,
                    wall_seconds=state.wall_seconds(), parameters=parameter_count(model),
                    init_scheme=model.init_scheme, optimizer=describe_optimizer(recipe),
                    recipe=dataclasses.asdict(recipe), precision=dataclasses.asdict(t.precision),
                    world_size=t.ctx.world_size, history=state.history, precise_bn=bn_note,
                    processes=state.processes, **val_scores)
    if t.ctx.is_main:
        # CPU tensors: model.pt loads with a plain torch.load(..., weights_only=True) on any machine
        checkpoint.save(t.run_dir / checkpoint.WEIGHTS, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        _write_figures(t.run_dir, model, state.history, t.config.model)
        write_json(t.run_dir / "result.json", {k: v for k, v in dataclasses.asdict(result).items()
                                               if k not in ("run_dir", "cached")})
    t.ctx.barrier()
    return result


def present(result: Result) -> int:
    if int(os.environ.get("RANK", "0")) != 0:
        return 0  # under torchrun only rank 0 reports
    reused = " (reused a finished run)" if result.cached else ""
    tta = f" (without TTA {result.test_accuracy_plain:.2%})" if result.recipe.get("tta") else ""
    print(f"{result.model}: test accuracy {result.test_accuracy:.2%}{tta} after {result.epochs} epochs, "
          f"{result.train_seconds:.0f} s training / {result.wall_seconds:.0f} s wall, "
          f"{result.parameters:,} parameters{reused}")
    print(f"results: {result.run_dir}")
    return 0
