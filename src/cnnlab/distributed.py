"""Scale-out with PyTorch's own engine, started by ``torchrun`` (gloo on CPU, nccl on CUDA).

One :class:`Context` (rank, world size, device) for every verb that runs distributed:

* ``train``: every rank builds the same model from the same seed and draws the same shuffled
  order and augmentations for each *global* batch, then takes its own contiguous shard of it.
  DDP (:func:`wrap`) averages the gradients, and :func:`sync_batchnorm` makes every BatchNorm
  layer normalize with the statistics of the whole global batch (and update its running
  statistics with them), so the update equals a single process's on the whole global batch,
  with or without BatchNorm. torch's ``SyncBatchNorm`` does this on CUDA; it rejects CPU tensors
  (its kernels are CUDA-only, and DDP refuses CPU modules holding one), so on the CPU
  :class:`CpuSyncBatchNorm` does it over gloo (per-channel sums all-reduced, forward and backward).
* ``probe``: each rank extracts the features of every world_size-th image; rank 0 gathers them
  and fits the classifier alone.

Only rank 0 writes files. Without torchrun (``WORLD_SIZE`` unset or 1) everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"
    owns_group: bool = False  # this process created the process group (and tears it down)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This rank's contiguous share of a global batch (its size must divide evenly)."""
        if not self.enabled:
            return batch
        n = batch.shape[0] // self.world_size
        return batch[self.rank * n:(self.rank + 1) * n]

    def all_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over ranks (unchanged without DDP)."""
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        """Rank 0's value of a picklable object, on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj) -> list:
        """Every rank's value of a picklable object, in rank order ([obj] without DDP)."""
        if not self.enabled:
            return [obj]
        box: list = [None] * self.world_size
        dist.all_gather_object(box, obj)
        return box

    def all_agree(self, flag: bool) -> bool:
        """True only when ``flag`` is true on every rank."""
        return all(self.all_gather(bool(flag)))

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def setup(device: str) -> Context:
    """Join the process group when started by torchrun (WORLD_SIZE > 1), else a 1-rank context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context(device=device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device, owns_group=owns)


def teardown(ctx: Context, *, wait: bool = False) -> None:
    """Destroy the process group this process created (a live gloo group at exit aborts).

    ``wait`` first waits for every rank (on the normal path: never after an error, where a rank
    that already left would leave the others waiting forever).
    """
    if ctx.owns_group and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()


def _all_reduce(tensor: torch.Tensor, group) -> torch.Tensor:
    dist.all_reduce(tensor, group=group)
    return tensor


class _GlobalBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm over the batch made of every rank's ``x`` (torch's SyncBatchNorm scheme
    with its fused CPU kernels): the per-element work is local, only per-channel vectors travel.

    Forward: each rank's mean and biased variance, combined into the global ones (Chan et al.'s
    parallel variance: N var = sum_r n_r (var_r + (mean_r - mean)^2), no cancellation), then
    normalization with them. Backward: with dy the upstream gradient, xhat the normalized input and
    means over the global batch, dx = w invstd (dy - mean(dy) - xhat mean(dy xhat)) (torch's fused
    kernel with this rank's means, then a fused per-channel correction to the global ones); the
    weight and bias get this rank's sums (DDP averages them). Statistics and parameters are float32
    at least (bf16 inputs under autocast); the output and dx have ``x``'s dtype.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, eps: float, group):
        C = x.shape[1]
        n = x.numel() // C  # this rank's values per channel
        dtype = torch.promote_types(x.dtype, torch.float32)
        w = weight.to(dtype) if weight is not None else x.new_ones(C, dtype=dtype)
        b = bias.to(dtype) if bias is not None else x.new_zeros(C, dtype=dtype)
        if n:  # this rank's mean and biased variance in one fused pass (momentum 0: the buffers stay)
            mean_r, var_r = torch.batch_norm_update_stats(x, w.new_zeros(C), w.new_ones(C), 0.0)
        else:  # an empty share still takes part in the all-reduces
            mean_r = var_r = x.new_zeros(C, dtype=dtype)
        total = _all_reduce(torch.cat([mean_r * n, mean_r.new_full((1,), n)]), group)  # C sums, then the count
        count = total[C:]
        mean = total[:C] / count
        var = _all_reduce(n * (var_r + (mean_r - mean).square()), group) / count
        y = F.batch_norm(x, mean, var, w, b, training=False, eps=eps)
        ctx.save_for_backward(x, w, mean, torch.rsqrt(var + eps), count)
        ctx.eps, ctx.group = eps, group
        ctx.mark_non_differentiable(mean, var, count)
        return y, mean, var, count

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, *_):
        x, w, mean, invstd, count = ctx.saved_tensors
        C = x.shape[1]
        n = x.numel() // C
        if not n:  # an empty share: nothing to differentiate, but the all-reduce needs this rank
            _all_reduce(w.new_zeros(2 * C), ctx.group)
            return torch.zeros_like(x), w.new_zeros(C) if ctx.needs_input_grad[1] else None, \
                w.new_zeros(C) if ctx.needs_input_grad[2] else None, None, None
        # torch's fused backward with this rank's means of dy and dy xhat, and this rank's sums
        dx, sum_dy_xhat, sum_dy = torch.ops.aten.native_batch_norm_backward(
            dy, x, w, None, None, mean, invstd, True, ctx.eps, [True, True, True])
        global_means = _all_reduce(torch.cat([sum_dy, sum_dy_xhat]), ctx.group) / count
        # the correction from local to global means, w invstd ((local - global mean(dy)) + xhat (local -
        # global mean(dy xhat))), is x * kappa + lam per channel: one fused BatchNorm kernel computes it
        delta = torch.cat([sum_dy, sum_dy_xhat]) / n - global_means
        scale = w * invstd
        kappa = scale * invstd * delta[C:]
        lam = scale * delta[:C] - kappa * mean
        dx.add_(F.batch_norm(x, torch.zeros_like(mean), torch.ones_like(mean), kappa, lam, training=False, eps=0.0))
        return dx, sum_dy_xhat if ctx.needs_input_grad[1] else None, sum_dy if ctx.needs_input_grad[2] else None, \
            None, None


def batch_norm_over_ranks(x: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None, eps: float,
                          group) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Training-mode BatchNorm of the batch made of every rank's ``x``: (y, mean, biased var, count).

    Differentiable in ``x``, ``weight`` and ``bias`` (:class:`_GlobalBatchNorm`). The ranks' batches
    may differ in size, one may even be empty (the count is all-reduced with the sums).
    """
    y, mean, var, count = _GlobalBatchNorm.apply(x, weight, bias, eps, group)
    return y, mean, var, count.item()


class CpuSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch, for CPU ranks (gloo).

    torch's ``nn.SyncBatchNorm`` rejects CPU tensors (its kernels exist for CUDA only; DDP also
    refuses CPU modules holding one), so CPU training uses this layer: with more than one rank it
    normalizes by :func:`batch_norm_over_ranks` and updates the running statistics as torch's
    BatchNorm does (momentum, or the cumulative average when momentum is None, as ``update_bn``
    sets it; the unbiased variance of the global batch). Otherwise (eval mode, one rank) it is
    plain BatchNorm. Its parameters and buffers are BatchNorm's: state dicts load into
    ``BatchNorm2d`` layers and back.
    """

    def __init__(self, *args, process_group=None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.process_group = process_group

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_initialized()):
            return super().forward(input)
        group = self.process_group or dist.group.WORLD
        if dist.get_world_size(group) == 1:
            return super().forward(input)
        y, mean, var, count = batch_norm_over_ranks(input, self.weight, self.bias, self.eps, group)
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / self.num_batches_tracked.item() if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
                self.running_var.lerp_((var * (count / max(count - 1, 1))).to(self.running_var.dtype), factor)
        return y


def sync_batchnorm(module: nn.Module, device: str) -> nn.Module:
    """``module`` with every BatchNorm layer synchronized over the ranks: torch's
    ``nn.SyncBatchNorm.convert_sync_batchnorm`` on accelerators, :class:`CpuSyncBatchNorm` on the CPU.

    The new layers share the old ones' parameters and buffers. Children are replaced in place and
    the module itself is returned (a new one only if ``module`` is itself a BatchNorm layer).
    """
    if torch.device(device).type != "cpu":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    out = module
    if isinstance(module, _BatchNorm) and not isinstance(module, CpuSyncBatchNorm):
        out = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                               module.track_running_stats, bias=module.bias is not None,
                               process_group=getattr(module, "process_group", None))
        out.weight, out.bias = module.weight, module.bias
        out.running_mean, out.running_var = module.running_mean, module.running_var
        out.num_batches_tracked = module.num_batches_tracked
        out.train(module.training)
    for name, child in module.named_children():
        out.add_module(name, sync_batchnorm(child, device))
    return out


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model DDP-wrapped when running distributed: gradients averaged over ranks, BatchNorm
    statistics computed over the global batch (``model``'s BatchNorm layers are converted in place
    by :func:`sync_batchnorm`, keeping their parameters, so build the optimizer after this)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    model = sync_batchnorm(model, ctx.device)
    ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
