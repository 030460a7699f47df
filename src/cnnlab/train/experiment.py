"""Train a CIFAR-10 network (hw-mish, hw-mish-bn or improved) and write its run folder.

The whole data set sits in memory as uint8; batches are augmented on tensors. Each epoch
records train loss/accuracy, test loss/accuracy, learning rate and seconds in history.json
and history.csv, and writes checkpoint.pt atomically; --resume RUN continues an interrupted
run (with --deterministic it ends with the same weights). A folder (--out) that already
holds a finished run with the same options is reused; an unfinished one is resumed.
Figures: loss.png (loss and accuracy per epoch), filters.png (the first-layer filters).
Data-parallel: torchrun --nproc_per_node N -m cnnlab train ... (rank 0 writes; BatchNorm statistics
are synchronized across ranks, see cnnlab.distributed).

Example: cnnlab train --model hw-mish-bn --epochs 30 --out runs/train/bn
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

from cnnlab import distributed
from cnnlab.data import cifar10
from cnnlab.errors import CnnlabError
from cnnlab.models.cifar import build, parameter_count
from cnnlab.progress import make_progress
from cnnlab.runs import (environment_record, new_run_dir, read_json, resolve_device, save_figure,
                         seed_everything, write_json, write_text)
from cnnlab.train import checkpoint
from cnnlab.train.config import Config, identity
from cnnlab.train.loop import (Lookahead, TrainingDiverged, describe_optimizer, evaluate, make_optimizer,
                               precise_bn, resolve_precision, train_epoch)

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
    train_seconds: float            # time in training epochs (all sessions of a resumed run)
    wall_seconds: float             # training + evaluation + set-up (all sessions)
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
    sessions: list[dict[str, Any]] = field(default_factory=list)
    cached: bool = False            # True when a finished run was reused
    # --val-split: the held-out images' final accuracy (TTA when the recipe uses it) and plain one
    val_images: int = 0
    val_accuracy: float | None = None
    val_accuracy_plain: float | None = None


def _config_from_folder(run_dir: Path, current: Config) -> Config:
    saved = read_json(run_dir / "config.json")
    names = {f.name for f in dataclasses.fields(Config)}
    options = {k: v for k, v in saved.items() if k in names}
    options.update(resume=run_dir, out=run_dir, quiet=current.quiet, device=current.device, threads=current.threads)
    if current.data_root is not None:
        options["data_root"] = current.data_root
    return Config(**options)


def _prepare_folder(config: Config) -> tuple[Config, Path, str]:
    """(config to use, run folder, mode) with mode 'new', 'resume' or 'cached'."""
    if config.resume is not None:
        run_dir = Path(config.resume)
        if not (run_dir / "config.json").is_file():
            raise CnnlabError(f"--resume {run_dir}: not a cnnlab train run folder (no config.json)")
        cfg = _config_from_folder(run_dir, config)
        return cfg, run_dir, "cached" if (run_dir / "result.json").is_file() else "resume"
    run_dir = new_run_dir("train", config.out)
    if (run_dir / "config.json").is_file():
        if identity(_config_from_folder(run_dir, config)) != identity(config):
            if (run_dir / checkpoint.CHECKPOINT).is_file():
                raise CnnlabError(f"{run_dir} holds a run with different options; choose another --out "
                                  f"or delete that folder")
            return config, run_dir, "new"
        if (run_dir / "result.json").is_file():
            return config, run_dir, "cached"
        if (run_dir / checkpoint.CHECKPOINT).is_file():
            return dataclasses.replace(config, resume=run_dir), run_dir, "resume"
    return config, run_dir, "new"


def _first_session(run_dir: Path) -> dict[str, Any]:
    """What a checkpoint from before ``sessions`` existed still tells about its first session."""
    saved = read_json(run_dir / "config.json")
    return dict(first_epoch=1, device=read_json(run_dir / "env.json").get("device"),
                world_size=saved.get("world_size", 1), cpu_capability=None,
                precision=saved.get("precision_resolved"))


def _precision_words(session: dict[str, Any]) -> str:
    p = session.get("precision") or {}
    words = ("bf16 autocast" if p.get("bf16") else "fp32") + (" + channels_last" if p.get("channels_last") else "")
    return f"{words} on {session.get('device')}" + (f" ({session['cpu_capability']})" if session.get("cpu_capability") else "")


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
    device = ctx.device
    if config.threads:
        torch.set_num_threads(config.threads)
    if ctx.is_main:
        config, run_dir, mode = _prepare_folder(config)
    else:
        run_dir, mode = None, None
    config, run_dir, mode = ctx.broadcast((config, run_dir, mode))
    if mode == "cached":
        log.info("reusing the finished run in %s", run_dir)
        saved = read_json(run_dir / "result.json")
        saved.update(run_dir=run_dir, cached=True)
        return Result(**saved)

    recipe = config.recipe()
    precision = resolve_precision(config.precision, config.model, device)
    seed_everything(config.seed, config.deterministic)
    data = cifar10.load(config.data_root, verify_md5=config.verify_md5, download=config.download)
    train, test = data.train.head(config.limit_train).to(device), data.test.head(config.limit_test).to(device)
    train, val = train.hold_out(config.val_split, config.seed) if config.val_split else (train, None)

    model = build(config.model)
    model.init_from_data(train.images[:5000].float().div(255).cpu())
    model = model.to(device)
    if precision.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = distributed.wrap(model, ctx)
    optimizer = make_optimizer(model, recipe)
    lookahead = Lookahead(model) if recipe.lookahead else None
    generator = torch.Generator().manual_seed(config.seed)
    # alternating flip: the half mirrored in even epochs, from the seed (so a resumed run gets it back)
    flip_base = (torch.rand(len(train), generator=torch.Generator().manual_seed(config.seed + 1)) < 0.5
                 if recipe.alternate_flip else None)
    B = min(recipe.batch_size, len(train))
    steps_per_epoch = len(train) // B
    total_steps = steps_per_epoch * recipe.epochs
    history: list[dict[str, float]] = []
    start_epoch, step, train_seconds, past_wall = 0, 0, 0.0, 0.0
    sessions: list[dict[str, Any]] = []

    if mode == "resume":
        state = checkpoint.load(run_dir / checkpoint.CHECKPOINT, device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"].cpu())  # map_location moved it to the device
        if lookahead is not None:
            lookahead.ema = state["lookahead"]
        start_epoch, step, history = state["epoch"], state["step"], state["history"]
        train_seconds, past_wall = state["train_seconds"], state["wall_seconds"]
        sessions = state.get("sessions") or [_first_session(run_dir)]
        log.info("resuming %s after epoch %d", run_dir, start_epoch)
    sessions = sessions + [dict(first_epoch=start_epoch + 1, device=device, world_size=ctx.world_size,
                                cpu_capability=torch.backends.cpu.get_cpu_capability(),
                                precision=dataclasses.asdict(precision))]
    if ctx.is_main and len(sessions) > 1 and sessions[-1]["precision"] != sessions[-2]["precision"]:
        log.warning("epochs 1-%d ran with %s, the rest runs with %s (this machine or --device differs): "
                    "result.json lists both under 'sessions'", start_epoch, _precision_words(sessions[-2]),
                    _precision_words(sessions[-1]))
    n_params = parameter_count(model)
    optimizer_desc = describe_optimizer(recipe)
    if ctx.is_main and mode == "new":
        write_json(run_dir / "config.json", {**dataclasses.asdict(config), "recipe": dataclasses.asdict(recipe),
                                             "init_scheme": model.init_scheme, "parameters": n_params,
                                             "precision_resolved": dataclasses.asdict(precision),
                                             "world_size": ctx.world_size})
        write_json(run_dir / "env.json", environment_record(device=device, seed=config.seed))
    if ctx.is_main:
        log.info("%s: %s parameters, %d epochs of %d steps (batch %d), %s, bf16=%s channels_last=%s -> %s",
                 config.model, f"{n_params:,}", recipe.epochs, steps_per_epoch, B, device,
                 precision.bf16, precision.channels_last, run_dir)

    session_start = time.perf_counter()
    with make_progress() as progress:
        task = progress.add_task("train", total=steps_per_epoch * (recipe.epochs - start_epoch), info="")

        def on_step(loss: float | None) -> None:
            progress.advance(task)
            if loss is not None:
                progress.update(task, info=f"loss {loss:.3f}")

        for epoch in range(start_epoch, recipe.epochs):
            progress.update(task, description=f"epoch {epoch + 1}/{recipe.epochs}")
            t0 = time.perf_counter()
            try:
                stats, step = train_epoch(model, net, train, recipe, optimizer, epoch=epoch, step=step,
                                          total_steps=total_steps, generator=generator, ctx=ctx,
                                          precision=precision, lookahead=lookahead, flip_base=flip_base,
                                          on_step=on_step if ctx.is_main else None)
            except TrainingDiverged as exc:
                kept = f"the last good checkpoint (epoch {epoch}) is kept in {run_dir}" if epoch else \
                    "no epoch had finished, so there is no checkpoint"
                raise TrainingDiverged(f"{exc}; {kept}. Lower --lr (now {recipe.lr}) or use --precision fp32.") from None
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            test_loss, test_acc = evaluate(model, test, ctx=ctx, precision=precision)
            row = dict(epoch=epoch + 1, train_loss=stats.loss, train_accuracy=stats.accuracy, test_loss=test_loss,
                       test_accuracy=test_acc, lr=optimizer.param_groups[0]["lr"], seconds=seconds)
            if val is not None:
                row["val_loss"], row["val_accuracy"] = evaluate(model, val, ctx=ctx, precision=precision)
            history.append(row)
            if ctx.is_main:
                log.info("epoch %d/%d  train loss %.4f acc %.4f  test loss %.4f acc %.4f  %.1fs", epoch + 1,
                         recipe.epochs, stats.loss, stats.accuracy, test_loss, test_acc, seconds)
                state = dict(model=model.state_dict(), optimizer=optimizer.state_dict(),
                             generator=generator.get_state(), epoch=epoch + 1, step=step, history=history,
                             train_seconds=train_seconds, sessions=sessions,
                             wall_seconds=past_wall + time.perf_counter() - session_start)
                if lookahead is not None:
                    state["lookahead"] = lookahead.ema
                checkpoint.save(run_dir / checkpoint.CHECKPOINT, state)
                write_json(run_dir / "history.json", history)
                write_text(run_dir / "history.csv", _history_csv(history))
            ctx.barrier()

    test_loss, plain_acc = (history[-1]["test_loss"], history[-1]["test_accuracy"]) if history else \
        evaluate(model, test, ctx=ctx, precision=precision)
    bn_note = None
    if recipe.precise_bn:
        t0 = time.perf_counter()
        if precise_bn(model, train, precision=precision, ctx=ctx):
            bn_note = dict(test_loss_before=test_loss, test_accuracy_before=plain_acc, images=len(train))
            test_loss, plain_acc = evaluate(model, test, ctx=ctx, precision=precision)
            bn_note["seconds"] = time.perf_counter() - t0
            if ctx.is_main:
                log.info("precise BatchNorm statistics over %d training images: test accuracy %.4f -> %.4f "
                         "(%.1fs)", len(train), bn_note["test_accuracy_before"], plain_acc, bn_note["seconds"])
    final_acc = evaluate(model, test, ctx=ctx, precision=precision, tta=True)[1] if recipe.tta else plain_acc
    val_scores = {}
    if val is not None:
        plain_val = evaluate(model, val, ctx=ctx, precision=precision)[1]
        val_scores = dict(val_images=len(val), val_accuracy_plain=plain_val, val_accuracy=(
            evaluate(model, val, ctx=ctx, precision=precision, tta=True)[1] if recipe.tta else plain_val))
    result = Result(run_dir=run_dir, model=config.model, epochs=recipe.epochs, test_accuracy=final_acc,
                    test_accuracy_plain=plain_acc, test_loss=test_loss, train_seconds=train_seconds,
                    wall_seconds=past_wall + time.perf_counter() - (session_start if mode == "resume" else t_start),
                    parameters=n_params, init_scheme=model.init_scheme, optimizer=optimizer_desc,
                    recipe=dataclasses.asdict(recipe), precision=dataclasses.asdict(precision),
                    world_size=ctx.world_size, history=history, precise_bn=bn_note, sessions=sessions, **val_scores)
    if ctx.is_main:
        # CPU tensors: model.pt loads with a plain torch.load(..., weights_only=True) on any machine
        checkpoint.save(run_dir / checkpoint.WEIGHTS, {k: v.detach().cpu() for k, v in model.state_dict().items()})
        _write_figures(run_dir, model, history, config.model)
        write_json(run_dir / "result.json", {k: v for k, v in dataclasses.asdict(result).items()
                                             if k not in ("run_dir", "cached")})
    ctx.barrier()
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
