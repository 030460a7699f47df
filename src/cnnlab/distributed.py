"""Scale-out with PyTorch's own engine, started by ``torchrun`` (gloo on CPU, nccl on CUDA).

One :class:`Context` (rank, world size, device) for every verb that runs distributed:

* ``train``: every rank builds the same model from the same seed and draws the same shuffled
  order and augmentations for each *global* batch, then takes its own contiguous shard of it.
  DDP (:func:`wrap`) averages the gradients, so the update equals a single process's on the
  whole global batch.
* ``probe``: each rank extracts the features of every world_size-th image; rank 0 gathers them
  and fits the classifier alone.

Only rank 0 writes files. Without torchrun (``WORLD_SIZE`` unset or 1) everything is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
        """Sum numbers over ranks (identity without DDP)."""
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


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model DDP-wrapped when running distributed (gradients averaged over ranks)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
