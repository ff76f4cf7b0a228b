"""Multi-GPU sequence parallelism for the FlashHead DiT through xDiT (xfuser), not a home-made engine.

Launch with torchrun (`torchrun --nproc_per_node N -m vividhead.cli stream ... --sequence-parallel`).
Every rank runs the same stream with the same seed; inside each DiT forward the tokens of the chunk
are split across ranks, self-attention runs as xDiT's `xFuserLongContextAttention` (Ulysses over heads,
ring over the rest), the per-frame audio cross-attention and MLP stay local, and the head's output is
gathered back. Only rank 0 writes output.

UNTESTED HERE: the dev/CI machine has no GPU and xfuser is an optional extra (`pip install vividhead[xdit]`).
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F

from vividhead.models.flashhead import FlashHeadDiT, apply_rope, rope_angles, sinusoidal_embedding


class SequenceParallel:
    """The xDiT process groups of this torchrun job (Ulysses degree = gcd(world, heads), ring = the rest)."""

    def __init__(self, num_heads: int) -> None:
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
        self.attention = xFuserLongContextAttention()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


class SequenceParallelDiT(torch.nn.Module):
    """FlashHeadDiT.forward with the token sequence split across the sequence-parallel ranks."""

    def __init__(self, model: FlashHeadDiT, sp: SequenceParallel) -> None:
        super().__init__()
        self.model, self.sp = model, sp
        self.config = model.config

    def audio_context(self, windows: torch.Tensor) -> torch.Tensor:
        return self.model.audio_context(windows)

    def forward(self, noisy_latent, timestep, reference_latent, audio_windows=None, context=None):
        m, cfg, sp = self.model, self.config, self.sp
        context = m.audio_context(audio_windows) if context is None else context
        dtype = m.patch_embedding.weight.dtype
        x = m.patch_embedding(torch.cat([noisy_latent, reference_latent], dim=1).to(dtype))
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)                                    # [B, L, dim]
        n = x.shape[1]
        per_rank = -(-n // sp.world)
        x = F.pad(x, (0, 0, 0, per_rank * sp.world - n))
        lo, hi = sp.rank * per_rank, (sp.rank + 1) * per_rank
        angles = F.pad(rope_angles(grid, cfg.dim // cfg.num_heads, x.device), (0, 0, 0, per_rank * sp.world - n))[lo:hi]
        rope = (angles.cos(), angles.sin())
        frame_of = (torch.arange(lo, hi, device=x.device) // (grid[1] * grid[2])).clamp(max=grid[0] - 1)
        x = x[:, lo:hi]                                                      # [B, L/world, dim]
        t = m.time_embedding(sinusoidal_embedding(cfg.freq_dim, timestep.reshape(-1).expand(x.shape[0])).to(dtype))
        t_mod = m.time_projection(t).unflatten(1, (6, cfg.dim))
        context = context.to(dtype)
        for block in m.blocks:
            x = self._block(block, x, t_mod, context, rope, frame_of)
        x = m.head(x, t)
        x = sp.group.all_gather(x.contiguous(), dim=1)[:, :n]              # [B, L, out * prod(patch)]
        return m.unpatchify(x, grid)

    def _block(self, block, x, t_mod, context, rope, frame_of):
        e = (block.modulation.float() + t_mod.float()).chunk(6, dim=1)
        h = (block.norm1(x).float() * (1 + e[1]) + e[0]).type_as(x)
        attn = block.self_attn
        b, n, d = h.shape
        q = apply_rope(attn.norm_q(attn.q(h)).view(b, n, attn.heads, -1), rope)
        k = apply_rope(attn.norm_k(attn.k(h)).view(b, n, attn.heads, -1), rope)
        v = attn.v(h).view(b, n, attn.heads, -1)
        y = attn.o(self.sp.attention(None, query=q, key=k, value=v).reshape(b, n, d))
        x = x + (y.float() * e[2]).type_as(x)
        x = x + self._cross(block.cross_attn, block.norm3(x), context, frame_of)
        y = block.ffn((block.norm2(x).float() * (1 + e[4]) + e[3]).type_as(x))
        return x + (y.float() * e[5]).type_as(x)

    @staticmethod
    def _cross(cross, x, context, frame_of):
        """Per-frame audio attention for a slice of tokens that may span several latent frames."""
        out = torch.empty_like(x)
        b, _, d = x.shape
        for f in frame_of.unique().tolist():
            idx = (frame_of == f).nonzero().squeeze(1)
            q = cross.norm_q(cross.q(x[:, idx])).view(b, -1, cross.heads, d // cross.heads).transpose(1, 2)
            k = cross.norm_k(cross.k(context[:, f])).view(b, -1, cross.heads, d // cross.heads).transpose(1, 2)
            v = cross.v(context[:, f]).view(b, -1, cross.heads, d // cross.heads).transpose(1, 2)
            out[:, idx] = cross.o(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, d))
        return out
