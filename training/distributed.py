"""Process groups and model wrapping for training: one CPU, one GPU, or many under torchrun.

`init_distributed()` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK), chooses the device
once (CUDA when present, else CPU) and the backend to match (nccl on CUDA, gloo on CPU).
`wrap_model` applies DDP, or FSDP (per block, then the root) for the 1.3B presets. Both stages use it.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def choose_device(local_rank: int = 0) -> torch.device:
    """CUDA (this process's GPU) when present, else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def init_distributed(timeout_s: float = 1800.0) -> DistContext:
    """Join torchrun's process group when WORLD_SIZE > 1; a single process needs no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = choose_device(local)
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": device} if device.type == "cuda" else {}))
    return DistContext(rank=rank, world_size=world, local_rank=local, device=device)


def shutdown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.barrier()   # no rank tears its transport down while another still talks to it
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def mean_across_ranks(value: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of a scalar tensor over all ranks (a copy; the input is untouched)."""
    out = value.detach().clone().float()
    if ctx.distributed:
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= ctx.world_size
    return out


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's value of `obj` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def use_fsdp(setting: bool | str, preset: str, ctx: DistContext) -> bool:
    """`auto`: FSDP for multi-GPU runs of the 1.3B presets (lite, pro); DDP otherwise."""
    if setting == "auto":
        return ctx.distributed and ctx.device.type == "cuda" and preset in ("lite", "pro")
    return bool(setting) and ctx.distributed


def wrap_model(model: nn.Module, ctx: DistContext, fsdp: bool) -> nn.Module:
    """DDP or FSDP for a multi-process run; the module itself for one process.

    FSDP shards every transformer block, then the root (PyTorch's `fully_shard`); the parameters keep
    their names, so checkpoints are gathered into the same release layout.
    """
    if not ctx.distributed:
        return model
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
        for block in getattr(model, "blocks", []):
            fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The user's module inside a DDP wrapper (FSDP2 keeps the module itself)."""
    return getattr(model, "module", model)
