"""Data parallelism with PyTorch DDP, started by ``torchrun`` (gloo on CPU, nccl on CUDA).

Every rank builds the same model from the same seed and draws the same shuffled order and the
same augmentations for each *global* batch, then takes its own contiguous shard of it. DDP
averages the gradients, so the update equals a single process's on the whole global batch.
Only rank 0 writes files.
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
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
    return Context(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def teardown(ctx: Context) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """The model DDP-wrapped when running distributed (gradients averaged over ranks)."""
    if not ctx.enabled:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [torch.device(ctx.device).index] if ctx.device.startswith("cuda") else None
    return DistributedDataParallel(model, device_ids=ids)
