"""The FlashHead DiT: a Wan-style video diffusion transformer with per-latent-frame audio cross-attention.

Compatible with the released SoulX-FlashHead checkpoints (parameter names and shapes in
/work/shared/FLASHHEAD_FORMAT.md). Training-facing API:

    model = FlashHeadDiT.for_preset("tiny")                          # or release.load_release(dir)
    windows = frame_windows(audio_rows)                              # [B, 33, L, C] -> [B, 33, 5, L, C]
    v = model(noisy_latent, timestep, reference_latent, windows)     # all latents [B, C, F, H, W]

`timestep` is in Wan's scale [0, 1000] (t * 1000 for the flow time t in [0, 1]); the model predicts the
velocity v with x_t = t * noise + (1 - t) * x0, so x0 = x_t - t * v. `model.audio_context(windows)` can be
computed once per chunk and passed as `context=` to every denoising step.

All streaming geometry (33 frames, motion frames, new frames per chunk, shift, steps) lives in `GEOMETRY`
(`models/geometry.py`, free of torch so that curation can read it).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, FrozenDict, register_to_config
from torch import nn
from torch.utils.checkpoint import checkpoint

from vividhead.models.geometry import GEOMETRY, Geometry  # noqa: F401 - the DiT's callers import both from here


def shift_timestep(t: torch.Tensor | float, shift: float = 5.0) -> torch.Tensor | float:
    """t' = shift * t / (1 + (shift - 1) * t) for flow time t in [0, 1]."""
    return shift * t / (1 + (shift - 1) * t)


def sampling_timesteps(steps: int = 4, shift: float = 5.0) -> list[float]:
    """Shifted flow times of the distilled sampler, ending with 0, as the authors' code makes them.

    2 steps: 1000, 500; 4 steps: 1000, 750, 500, 250; any other count: linspace(1000, 1, steps) in float32
    (so 8 steps end at 1, not 125). Each is divided by 1000 and shifted, then 0 is appended.
    """
    if steps < 1:
        raise ValueError(f"sampler steps must be >= 1, got {steps}")
    fixed = {2: [1000.0, 500.0], 4: [1000.0, 750.0, 500.0, 250.0]}
    base = fixed.get(steps) or [float(t) for t in np.linspace(1000, 1, steps, dtype=np.float32)]
    return [float(shift_timestep(t / 1000.0, shift)) for t in base] + [0.0]


# ------------------------------------------------------------------------------------------- config
# Presets: config.json values that differ from the release defaults of `FlashHeadDiT.__init__`.
PRESETS: dict[str, dict[str, Any]] = {
    "lite": dict(in_dim=256, out_dim=128, vae_stride=(8, 32, 32), patch_size=(1, 1, 1)),     # LTX VAE
    "pro": dict(in_dim=32, out_dim=16, vae_stride=(4, 8, 8), patch_size=(1, 2, 2)),          # Wan VAE
    "tiny": dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=16, freq_dim=32,   # CPU, space-to-depth
                 in_dim=2 * 192, out_dim=192, vae_stride=(4, 64, 64), patch_size=(1, 1, 1),
                 audio_layers=1, audio_dim=80, audio_hidden=64, audio_tokens=4,
                 codec={"type": "space_to_depth", "frame_size": 32, "spatial": 4}),
}


def preset_config(name: str, **overrides: Any) -> dict[str, Any]:
    """config.json values of a preset: `tiny` (CPU), `lite` (LTX VAE) or `pro` (Wan VAE), 1.3B dims for the latter two."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: expected one of {sorted(PRESETS)}")
    return {**PRESETS[name], "preset": name, **overrides}


# ------------------------------------------------------------------------------------------ helpers
def sinusoidal_embedding(dim: int, t: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, dim]: cos half then sin half, base 10000 (computed in float64 like Wan)."""
    half = dim // 2
    freqs = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=t.device) / half)
    angles = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


def rope_angles(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """3D RoPE angles [F*H*W, head_dim/2]: the pairs split into time / height / width parts."""
    c = head_dim // 2
    parts = (c - 2 * (c // 3), c // 3, c // 3)
    axes = []
    for n, pairs in zip(grid, parts):
        inv = 1.0 / torch.pow(10000.0, torch.arange(pairs, dtype=torch.float64, device=device) * 2 / (2 * pairs))
        axes.append(torch.arange(n, dtype=torch.float64, device=device)[:, None] * inv[None])   # [n, pairs]
    f, h, w = grid
    return torch.cat([
        axes[0][:, None, None].expand(f, h, w, -1),
        axes[1][None, :, None].expand(f, h, w, -1),
        axes[2][None, None, :].expand(f, h, w, -1),
    ], dim=-1).reshape(f * h * w, c).float()


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x [B, L, heads, head_dim] rotated pairwise (complex pairs (x0, x1), (x2, x3), ...); rope = (cos, sin) [L, hd/2]."""
    xr = x.float().reshape(*x.shape[:-1], -1, 2)
    cos, sin = rope[0][None, :, None], rope[1][None, :, None]
    out = torch.stack([xr[..., 0] * cos - xr[..., 1] * sin, xr[..., 0] * sin + xr[..., 1] * cos], dim=-1)
    return out.flatten(-2).type_as(x)


def frame_windows(rows: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Per-frame audio windows: [B, N, L, C] -> [B, N, 2r+1, L, C], indices i-r..i+r clamped to [0, N).

    The streaming engine passes the chunk's 33 rows plus `radius` rows of left context from the 8 s window
    and keeps the last 33 windows, so only the right edge (the newest audio) is clamped.
    """
    n = rows.shape[1]
    index = (torch.arange(n, device=rows.device)[:, None] + torch.arange(-radius, radius + 1, device=rows.device)).clamp(0, n - 1)
    return rows[:, index]


def group_audio(windows: torch.Tensor, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio per latent frame from per-frame windows [B, N, 5, L, C] with N = (F-1)*stride + 1.

    Returns (first [B, 1, 5*L*C], rest [B, F-1, (stride+4)*L*C]): the first frame keeps its full window;
    each later group of `stride` frames gives its first frame's positions 0..2, its middle frames'
    position 2 and its last frame's positions 2..4.
    """
    b, n = windows.shape[:2]
    if (n - 1) % stride:
        raise ValueError(f"audio windows: {n} frames is not 1 + a multiple of the temporal stride {stride}")
    first = windows[:, :1].flatten(2)                                                 # [B, 1, 5*L*C]
    groups = windows[:, 1:].unflatten(1, ((n - 1) // stride, stride))                # [B, F-1, s, 5, L, C]
    rest = torch.cat([groups[:, :, 0, :3], groups[:, :, 1:-1, 2], groups[:, :, -1, 2:]], dim=2)  # [B, F-1, s+4, L, C]
    return first, rest.flatten(2)


# ------------------------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps, self.weight = eps, nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


# The attention kernel of self-attention: q, k, v [B, L, heads, head_dim] -> [B, L, heads, head_dim].
# `FlashHeadDiT.set_attention` swaps it (inference/parallel.py: xDiT sequence parallelism).
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Full attention through PyTorch SDPA (FlashAttention / memory-efficient kernels on GPU)."""
    return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        self.attention: Attention = sdpa_attention

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        b, n, d = x.shape
        q = apply_rope(self.norm_q(self.q(x)).view(b, n, self.heads, -1), rope)         # [B, L, h, d/h]
        k = apply_rope(self.norm_k(self.k(x)).view(b, n, self.heads, -1), rope)
        v = self.v(x).view(b, n, self.heads, -1)
        return self.o(self.attention(q, k, v).reshape(b, n, d))


class AudioCrossAttention(nn.Module):
    """Pixel-wise audio attention: the tokens of latent frame f attend only to frame f's audio tokens."""

    def __init__(self, dim: int, heads: int, eps: float, has_image_input: bool) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q, self.norm_k = RMSNorm(dim, eps), RMSNorm(dim, eps)
        if has_image_input:  # present in some configs' checkpoints; FlashHead conditions on the latent instead
            self.k_img, self.v_img, self.norm_k_img = nn.Linear(dim, dim), nn.Linear(dim, dim), RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        f, tokens = context.shape[1:3]                                                    # context [B, F, T, dim]
        xf = x.view(b * f, n // f, d)                                                     # [B*F, H*W, dim]
        ctx = context.reshape(b * f, tokens, d)                                           # [B*F, T, dim]
        q = self.norm_q(self.q(xf)).view(b * f, -1, self.heads, d // self.heads).transpose(1, 2)
        k = self.norm_k(self.k(ctx)).view(b * f, tokens, self.heads, -1).transpose(1, 2)
        v = self.v(ctx).view(b * f, tokens, self.heads, -1).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)                                     # [B*F, h, H*W, d/h]
        return self.o(out.transpose(1, 2).reshape(b, n, d))


class Block(nn.Module):
    def __init__(self, cfg: FrozenDict) -> None:    # the model's config
        super().__init__()
        d = cfg.dim
        self.norm1 = nn.LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.norm2 = nn.LayerNorm(d, cfg.eps, elementwise_affine=False)
        self.norm3 = nn.LayerNorm(d, cfg.eps)
        self.self_attn = SelfAttention(d, cfg.num_heads, cfg.eps)
        self.cross_attn = AudioCrossAttention(d, cfg.num_heads, cfg.eps, cfg.has_image_input)
        self.ffn = nn.Sequential(nn.Linear(d, cfg.ffn_dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.ffn_dim, d))
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d**0.5)

    def forward(self, x: torch.Tensor, t_mod: torch.Tensor, context: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        e = (self.modulation.float() + t_mod.float()).chunk(6, dim=1)                   # 6 x [B, 1, dim]
        y = self.self_attn((self.norm1(x).float() * (1 + e[1]) + e[0]).type_as(x), rope)
        x = x + (y.float() * e[2]).type_as(x)
        x = x + self.cross_attn(self.norm3(x), context)
        y = self.ffn((self.norm2(x).float() * (1 + e[4]) + e[3]).type_as(x))
        return x + (y.float() * e[5]).type_as(x)


class Head(nn.Module):
    def __init__(self, cfg: FrozenDict) -> None:    # the model's config
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, cfg.eps, elementwise_affine=False)
        self.head = nn.Linear(cfg.dim, cfg.out_dim * math.prod(cfg.patch_size))
        self.modulation = nn.Parameter(torch.randn(1, 2, cfg.dim) / cfg.dim**0.5)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        e = (self.modulation.float() + t.float()[:, None]).chunk(2, dim=1)
        return self.head((self.norm(x).float() * (1 + e[1]) + e[0]).type_as(x))


class AudioEmbedding(nn.Module):
    """Released as `audio_emb`; kept so checkpoints load strictly, unused by the forward pass."""

    def __init__(self, audio_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(audio_dim), nn.Linear(audio_dim, audio_dim), nn.GELU(),
                                  nn.Linear(audio_dim, dim), nn.LayerNorm(dim))


class AudioProjection(nn.Module):
    """Audio features of one latent frame -> `audio_tokens` context tokens of width dim."""

    def __init__(self, cfg: FrozenDict) -> None:    # the model's config
        super().__init__()
        per_frame = cfg.audio_layers * cfg.audio_dim
        self.tokens, self.dim = cfg.audio_tokens, cfg.dim
        self.proj1 = nn.Linear(5 * per_frame, cfg.audio_hidden)
        self.proj1_vf = nn.Linear((5 + cfg.vae_stride[0] - 1) * per_frame, cfg.audio_hidden)
        self.proj2 = nn.Linear(cfg.audio_hidden, cfg.audio_hidden)
        self.proj3 = nn.Linear(cfg.audio_hidden, cfg.audio_tokens * cfg.dim)
        self.norm = nn.LayerNorm(cfg.dim)

    def forward(self, first: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        h = torch.cat([F.relu(self.proj1(first)), F.relu(self.proj1_vf(rest))], dim=1)  # [B, F, hidden]
        h = self.proj3(F.relu(self.proj2(h)))                                            # [B, F, T*dim]
        return self.norm(h.unflatten(-1, (self.tokens, self.dim)))                       # [B, F, T, dim]


# -------------------------------------------------------------------------------------------- model
class FlashHeadDiT(ModelMixin, ConfigMixin):
    """FlashHead denoiser, a diffusers model: a release folder (config.json + diffusion_pytorch_model.safetensors)
    is what `save_pretrained` writes and `from_pretrained` reads (`vividhead.models.release` adds the strict key
    and shape check). Parameter names follow the release exactly (see module docstring).

    The arguments are config.json's keys: the released ones first, then vividhead's own, whose defaults are the
    release's values. Keys the class does not know are kept in the config and written back."""

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        dim: int = 1536,
        in_dim: int = 32,
        ffn_dim: int = 8960,
        out_dim: int = 16,
        text_dim: int = 4096,
        freq_dim: int = 256,
        eps: float = 1e-6,
        vae_stride: tuple[int, int, int] = (4, 8, 8),
        patch_size: tuple[int, int, int] = (1, 2, 2),
        num_heads: int = 12,
        num_layers: int = 30,
        has_image_input: bool = False,
        # vividhead extensions (absent from the release: the defaults are the release's values)
        audio_layers: int = 12,            # wav2vec2 hidden states per frame
        audio_dim: int = 768,              # wav2vec2 width
        audio_hidden: int = 512,           # audio_proj width
        audio_tokens: int = 32,            # audio context tokens per latent frame
        preset: str | None = None,         # "tiny" | "lite" | "pro"; None in the release (inferred from the folder)
        codec: dict[str, Any] | None = None,   # tiny: {"type": "space_to_depth", "frame_size": 32, "spatial": 4}
    ) -> None:
        super().__init__()
        if in_dim != 2 * out_dim:
            raise ValueError(f"config: in_dim ({in_dim}) must be 2 * out_dim ({out_dim}): the reference latent is concatenated")
        if dim % num_heads or (dim // num_heads) % 2:
            raise ValueError(f"config: dim ({dim}) must split into {num_heads} heads of even width")
        self.register_to_config(vae_stride=tuple(vae_stride), patch_size=tuple(patch_size))   # JSON gives lists
        cfg = self.config
        self.gradient_checkpointing = False
        self.patch_embedding = nn.Conv3d(cfg.in_dim, cfg.dim, kernel_size=cfg.patch_size, stride=cfg.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(cfg.text_dim, cfg.dim), nn.GELU(approximate="tanh"), nn.Linear(cfg.dim, cfg.dim))
        self.time_embedding = nn.Sequential(nn.Linear(cfg.freq_dim, cfg.dim), nn.SiLU(), nn.Linear(cfg.dim, cfg.dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(cfg.dim, 6 * cfg.dim))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.num_layers))
        self.head = Head(cfg)
        self.audio_emb = AudioEmbedding(cfg.audio_dim, cfg.dim)
        self.audio_proj = AudioProjection(cfg)

    @classmethod
    def for_preset(cls, name: str, **overrides: Any) -> "FlashHeadDiT":
        """A freshly initialised model of a preset (see `preset_config`)."""
        return cls(**preset_config(name, **overrides))

    @classmethod
    def from_config_json(cls, data: dict[str, Any]) -> "FlashHeadDiT":
        """The model a config.json describes; keys the class does not know are kept in its config."""
        known = set(inspect.signature(cls.__init__).parameters) - {"self"}
        model = cls(**{k: v for k, v in data.items() if k in known})
        extra = {k: v for k, v in data.items() if k not in known and not k.startswith("_")}
        if extra:
            model.register_to_config(**extra)
        return model

    @property
    def temporal_stride(self) -> int:
        return self.config.vae_stride[0]

    def set_attention(self, attention: Attention) -> None:
        """Use `attention` as every block's self-attention kernel (default: `sdpa_attention`)."""
        for block in self.blocks:
            block.self_attn.attention = attention

    def audio_context(self, windows: torch.Tensor) -> torch.Tensor:
        """Per-frame windows [B, N, 5, L, C] -> audio tokens per latent frame [B, F, T, dim]."""
        first, rest = group_audio(windows.to(self.audio_proj.proj1.weight.dtype), self.temporal_stride)
        return self.audio_proj(first, rest)

    def forward(
        self,
        noisy_latent: torch.Tensor,           # [B, C, F, H, W]
        timestep: torch.Tensor,               # [B] in [0, 1000]
        reference_latent: torch.Tensor,       # [B, C, F, H, W]
        audio_windows: torch.Tensor | None = None,   # [B, (F-1)*s+1, 5, L, C]
        context: torch.Tensor | None = None,  # precomputed audio_context(audio_windows)
    ) -> torch.Tensor:
        cfg = self.config
        if context is None:
            if audio_windows is None:
                raise ValueError("FlashHeadDiT.forward needs audio_windows or context")
            context = self.audio_context(audio_windows)
        dtype = self.patch_embedding.weight.dtype
        x = self.patch_embedding(torch.cat([noisy_latent, reference_latent], dim=1).to(dtype))  # [B, dim, f, h, w]
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)                                                 # [B, f*h*w, dim]
        if context.shape[1] != grid[0]:
            raise ValueError(f"audio context has {context.shape[1]} latent frames, the latent has {grid[0]}")
        # The timestep is cast to the model dtype first, as the release does: in bf16 937.5 is embedded as 936.
        timestep = timestep.reshape(-1).expand(x.shape[0]).to(dtype)
        t = self.time_embedding(sinusoidal_embedding(cfg.freq_dim, timestep).to(dtype))
        t_mod = self.time_projection(t).unflatten(1, (6, cfg.dim))                       # [B, 6, dim]
        angles = rope_angles(grid, cfg.dim // cfg.num_heads, x.device)
        rope = (angles.cos(), angles.sin())
        context = context.to(dtype)
        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, t_mod, context, rope, use_reentrant=False)
            else:
                x = block(x, t_mod, context, rope)
        x = self.head(x, t)                                                              # [B, f*h*w, out*prod(p)]
        return self.unpatchify(x, grid)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        (f, h, w), (p1, p2, p3), c = grid, self.config.patch_size, self.config.out_dim
        x = x.view(x.shape[0], f, h, w, p1, p2, p3, c)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)
        return x.reshape(x.shape[0], c, f * p1, h * p2, w * p3)                           # [B, C, F, H, W]
