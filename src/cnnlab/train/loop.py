"""The training engine: tensor batches from memory, one step, the schedule, evaluation, TTA.

Nothing here writes files; ``cnnlab.train.experiment`` owns the run folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

from cnnlab.data.cifar10 import Split, alternating_flips, augment
from cnnlab.errors import CnnlabError
from cnnlab.distributed import Context
from cnnlab.precision import Precision
from cnnlab.train.config import Recipe
from cnnlab.train.muon import FilterMuon, filter_banks

if TYPE_CHECKING:
    from cnnlab.train.state import TrainState


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite."""


def lr_factor(step: int, total: int, recipe: Recipe) -> float:
    """Linear warm-up from ``lr_start`` to 1 over ``warmup`` of the steps, then linear to ``lr_end``."""
    warm = int(total * recipe.warmup)
    if step < warm:
        f = step / warm
        return recipe.lr_start * (1 - f) + f
    f = (step - warm) / max(1, total - warm)
    return (1 - f) + recipe.lr_end * f


def param_groups(model: nn.Module, recipe: Recipe, skip: tuple[nn.Parameter, ...] = ()) -> list[dict]:
    """BatchNorm biases get ``bias_lr_scale`` x the lr and weight decay / that scale.

    Any BatchNorm kind counts (``SyncBatchNorm`` too), so a model converted for DDP gets the same
    groups, in the same order, as the plain one: the same update, and checkpoints load across both.
    Parameters in ``skip`` (another optimizer's) are left out.
    """
    bn_bias, other = [], []
    skipped = {id(p) for p in skip}
    for m in model.modules():
        for name, p in m.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in skipped:
                continue
            (bn_bias if isinstance(m, nn.modules.batchnorm._BatchNorm) and name == "bias" else other).append(p)
    s = recipe.bias_lr_scale
    groups = [dict(params=other, lr=recipe.lr, weight_decay=recipe.weight_decay, lr_scale=1.0)]
    if bn_bias:
        groups.append(dict(params=bn_bias, lr=recipe.lr * s, weight_decay=recipe.weight_decay / s, lr_scale=s))
    return groups


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.Optimizer | FilterMuon:
    """Nesterov SGD over :func:`param_groups`; with ``recipe.optimizer == "muon"`` the conv filter
    banks go to Muon instead (:class:`cnnlab.train.muon.FilterMuon`)."""
    filters = tuple(filter_banks(model)) if recipe.optimizer == "muon" else ()
    sgd = torch.optim.SGD(param_groups(model, recipe, skip=filters), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.momentum > 0)
    if not filters:
        return sgd
    return FilterMuon(filters, sgd, lr=recipe.muon_lr, momentum=recipe.muon_momentum,
                      lr_scale=recipe.muon_lr / recipe.lr, normalize=recipe.muon_normalize)


def describe_optimizer(recipe: Recipe) -> str:
    sgd = (f"SGD (Nesterov, momentum {recipe.momentum}), peak lr {recipe.lr}, weight decay "
           f"{recipe.weight_decay:g}, label smoothing {recipe.label_smoothing}, batch {recipe.batch_size}")
    if recipe.optimizer != "muon":
        return sgd
    norm = ", filters renormalized" if recipe.muon_normalize else ""
    return f"Muon for conv filters (peak lr {recipe.muon_lr}, momentum {recipe.muon_momentum}{norm}); {sgd} for the rest"


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)


class Lookahead:
    """An exponential moving average of the weights that the model is reset to every 5 steps."""

    every = 5

    def __init__(self, model: nn.Module) -> None:
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @staticmethod
    def decay(step: int, total: int) -> float:
        return 0.95 ** 5 * (step / total) ** 3  # small early (follow the weights), larger late

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        for k, v in model.state_dict().items():
            if k in self.ema:
                self.ema[k].lerp_(v, 1 - decay)
                v.copy_(self.ema[k])


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int


def train_epoch(state: TrainState, data: Split, *, ctx: Context, precision: Precision, net: nn.Module | None = None,
                on_step: Callable[[float | None], None] | None = None) -> EpochStats:
    """Train ``state`` for its next epoch over ``data`` (on the device, uint8); advances its step and epoch.

    ``net`` is ``state.model`` or its DDP wrapper (default: the model). ``on_step`` is called after
    every step, with the loss every 5th step and None otherwise. Returns the epoch's statistics
    over all ranks.
    """
    model, recipe, optimizer, lookahead = state.model, state.recipe, state.optimizer, state.lookahead
    net = model if net is None else net
    model.train()
    N, B = len(data), min(recipe.batch_size, len(data))
    if B % ctx.world_size:
        raise ValueError(f"--batch-size {B} must be divisible by the {ctx.world_size} DDP ranks")
    steps, epoch = N // B, state.epoch
    order = torch.randperm(N, generator=state.generator)  # the same on every rank
    flips = None
    if recipe.flip and recipe.alternate_flip:
        if state.flip_base is None or len(state.flip_base) != N:
            raise ValueError("alternate_flip needs flip_base, one bool per training image")
        flips = alternating_flips(state.flip_base, epoch)
    whiten_bias = getattr(model, "first_conv", None)
    freeze_bias = (recipe.whiten_bias_epochs > 0 and epoch >= recipe.whiten_bias_epochs
                   and whiten_bias is not None and whiten_bias.bias is not None)
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.images.device)
    correct = torch.zeros((), dtype=torch.int64, device=data.images.device)
    seen = 0
    for i in range(steps):
        batch = order[i * B:(i + 1) * B]  # on the CPU, like the flip mask
        idx = batch.to(data.images.device)
        images = augment(data.images[idx], translate=recipe.translate, flip=recipe.flip, generator=state.generator,
                         flip_mask=None if flips is None else flips[batch])
        images, labels = ctx.shard(images), ctx.shard(data.labels[idx])  # this rank's part
        x = precision.images(images)
        set_lr(optimizer, recipe.lr * lr_factor(state.step, state.total_steps, recipe))
        with precision.autocast(ctx.device):
            logits = net(x)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if freeze_bias:
            whiten_bias.bias.grad = None  # SGD skips parameters without a gradient
        optimizer.step()
        state.step += 1
        if lookahead is not None and state.step % Lookahead.every == 0:
            lookahead.update(model, Lookahead.decay(state.step, state.total_steps))
        loss_sum += loss.detach().double() * labels.shape[0]
        correct += (logits.detach().argmax(1) == labels).sum()
        seen += labels.shape[0]
        if (i % 10 == 9 or i == steps - 1) and not torch.isfinite(loss_sum):
            raise TrainingDiverged(f"the training loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}")
        if on_step is not None:
            on_step(loss.item() if i % 5 == 0 or i == steps - 1 else None)
    if lookahead is not None and state.step >= state.total_steps >= Lookahead.every:
        # end on the averaged weights; a run shorter than one averaging period has only the initial
        # weights in its average, so it keeps its trained ones
        lookahead.update(model, 1.0)
    state.epoch += 1
    total_loss, total_correct, total_seen = ctx.all_sum([loss_sum.item(), float(correct.item()), float(seen)])
    return EpochStats(total_loss / max(total_seen, 1), total_correct / max(total_seen, 1), int(total_seen))


@torch.no_grad()
def precise_bn(model: nn.Module, data: Split, *, precision: Precision, batch_size: int = 500,
               transform: Callable[[torch.Tensor], torch.Tensor] | None = None, ctx: Context | None = None) -> int:
    """Replace the BatchNorm running statistics by their exact average over ``data``.

    During training they are an exponential average over the last few dozen augmented batches,
    taken while the weights still moved. With the weights frozen, "precise BN" (Wu & Johnson, 2021,
    "Rethinking Batch in BatchNorm"; torch's ``update_bn``: reset, then a cumulative average in
    train mode, the model's mode restored) measures them once over the whole set. The trainer uses
    the clean images (``transform=None``); ``transform`` (uint8 batch -> uint8 batch, e.g.
    augmentation) is for experiments. Under DDP, pass ``ctx`` with a model whose BatchNorm layers
    :func:`cnnlab.distributed.wrap` synchronized: each rank runs its share of every batch and the
    layers see the whole batch, so every rank gets one process's result (a world_size-th of the work).
    Returns the number of BatchNorm layers updated (0: nothing to do).
    """
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if n_bn == 0:
        return 0

    def batches():
        for i in range(0, len(data), batch_size):
            x = data.images[i:i + batch_size]  # B, 3, 32, 32 uint8
            if ctx is not None and ctx.enabled:
                x = x.tensor_split(ctx.world_size)[ctx.rank]  # this rank's share (sizes may differ by 1)
            yield precision.images(x if transform is None else transform(x))

    with precision.autocast(str(data.images.device)):
        update_bn(batches(), model)
    return n_bn


def _tta_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mirror + 1-px translations: half weight on the image and its mirror, half on shifted views."""

    def mirror(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(v).float() + 0.5 * model(v.flip(-1)).float()

    H, W = x.shape[-2:]
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")  # B, C, H+2, W+2
    shifted = [padded[..., 0:H, 0:W], padded[..., 2:H + 2, 2:W + 2]]
    return 0.5 * mirror(x) + 0.5 * torch.stack([mirror(s) for s in shifted]).mean(0)


@torch.no_grad()
def evaluate(model: nn.Module, data: Split, *, ctx: Context, precision: Precision, tta: bool = False,
             batch_size: int = 1000) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) on ``data``; each rank takes every world_size-th batch."""
    was_training = model.training
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    n_batches = math.ceil(len(data) / batch_size)
    for b in range(ctx.rank, n_batches, ctx.world_size):
        images = data.images[b * batch_size:(b + 1) * batch_size]
        labels = data.labels[b * batch_size:(b + 1) * batch_size]
        x = precision.images(images)
        with precision.autocast(ctx.device):
            logits = _tta_logits(model, x) if tta else model(x).float()
        loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
        correct += int((logits.argmax(1) == labels).sum())
        seen += labels.shape[0]
    model.train(was_training)
    loss_sum, correct, seen = ctx.all_sum([loss_sum, float(correct), float(seen)])
    return loss_sum / max(seen, 1), correct / max(seen, 1)
