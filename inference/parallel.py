"""Multi-GPU sequence parallelism for the FlashHead DiT through xDiT (xfuser): only the attention kernel changes.

Launch with torchrun (`torchrun --nproc_per_node N -m vividhead.cli stream ... --sequence-parallel`). Every
rank runs the same stream with the same seed and the model's own forward pass; `enable(model)` swaps each
block's self-attention kernel for `SequenceParallel.attention`: the rank takes its slice of the chunk's
query/key/value tokens, xDiT's `xFuserLongContextAttention` computes attention for that slice over the whole
sequence (Ulysses over heads, ring over the rest), and the slices are all-gathered back. Self-attention, the
quadratic part, is split across GPUs; the linear layers and the per-frame audio cross-attention run on every
rank. Only rank 0 writes output.

UNTESTED HERE: the dev/CI machine has no GPU and xfuser is an optional extra (`pip install vividhead[xdit]`);
the one-rank equivalence of the swapped kernel is tested on CPU.
"""

from __future__ import annotations

import math
import os

import torch

from vividhead.models.flashhead import FlashHeadDiT


class SequenceParallel:
    """The xDiT process groups of this torchrun job (Ulysses degree = gcd(world, heads), ring = the rest)."""

    def __init__(self, num_heads: int) -> None:
        # xfuser is an optional extra, imported only when sequence parallelism is asked for.
        import torch.distributed as dist
        from xfuser.core.distributed import (get_sequence_parallel_rank, get_sequence_parallel_world_size,
                                             get_sp_group, init_distributed_environment, initialize_model_parallel)
        from xfuser.core.long_ctx_attention import xFuserLongContextAttention

        if not dist.is_initialized():
            dist.init_process_group("nccl")
        world = dist.get_world_size()
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", dist.get_rank() % torch.cuda.device_count())))
        init_distributed_environment(rank=dist.get_rank(), world_size=world)
        ulysses = math.gcd(world, num_heads)
        initialize_model_parallel(sequence_parallel_degree=world, ring_degree=world // ulysses, ulysses_degree=ulysses)
        self.rank, self.world = get_sequence_parallel_rank(), get_sequence_parallel_world_size()
        self.group = get_sp_group()
        self.long_context_attention = xFuserLongContextAttention()

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The `Attention` kernel: q, k, v [B, L, heads, head_dim] (the same on every rank) -> [B, L, heads, head_dim]."""
        n = q.shape[1]
        if n % self.world:
            raise ValueError(f"sequence parallelism: {n} tokens do not split over {self.world} GPUs")
        part = slice(self.rank * n // self.world, (self.rank + 1) * n // self.world)
        local = self.long_context_attention(None, query=q[:, part].contiguous(), key=k[:, part].contiguous(),
                                            value=v[:, part].contiguous())
        return self.group.all_gather(local.contiguous(), dim=1)


def enable(model: FlashHeadDiT, sp: SequenceParallel) -> FlashHeadDiT:
    """Run `model`'s self-attention through `sp` (the model's forward pass is unchanged)."""
    model.set_attention(sp.attention)
    return model
