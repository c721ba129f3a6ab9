"""torch.distributed plumbing for ``torchrun``: process group, DDP wrapper, reductions.

Launched by ``torchrun --nproc_per_node N -m napari_cellseg train ...``, which sets RANK,
WORLD_SIZE and LOCAL_RANK; a plain run is a world of one and none of this does anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ._torch import torch


@dataclass
class Context:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_rank() -> int:
    """This process's rank as torchrun sets it (0 outside torchrun), before any process group."""
    return int(os.environ.get("RANK", "0"))


def setup(device: str = "auto") -> Context:
    """Join the process group that torchrun describes in the environment, if any (also a world
    of one under torchrun, so a single-GPU torchrun job runs the same NCCL/DDP path as many)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and "TORCHELASTIC_RUN_ID" not in os.environ:
        return Context()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    owns = not torch.distributed.is_initialized()
    if owns:
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Context(torch.distributed.get_rank(), torch.distributed.get_world_size(), dev, owns)


def teardown(ctx: Context) -> None:
    if ctx.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def wrap(model: torch.nn.Module, ctx: Context) -> torch.nn.Module:
    """DistributedDataParallel when there are several processes, else the model itself."""
    if ctx.world_size <= 1:
        return model
    ids = [ctx.device.index] if ctx.device is not None and ctx.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def mean(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Average a tensor over processes (every rank sees the same loss, so all stop together)."""
    if ctx.world_size <= 1:
        return values
    values = values.clone()
    torch.distributed.all_reduce(values)
    return values / ctx.world_size


def gather(obj: Any, world_size: int) -> list[Any]:
    """Every process's ``obj``, in rank order (a list of one without a process group)."""
    if world_size <= 1:
        return [obj]
    out: list[Any] = [None] * world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.world_size > 1:
        torch.distributed.barrier()
