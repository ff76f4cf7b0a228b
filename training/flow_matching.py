"""The stage-1 objective: flow matching with velocity MSE (paper eq. 1) on the generated frames only.

Convention (the same as the sampler in `vividhead.models.flashhead`): x_t = t * noise + (1 - t) * x0,
the model predicts v and the target is u = noise - x0, so x0 = x_t - t * v. Flow times are drawn
uniformly and warped with the sampler's shift, t' = shift * t / (1 + (shift - 1) * t). As at
inference, the clean motion latents overwrite the first latent frames of x_t; the loss skips them.
The audio condition of a sample is zeroed with a small probability so the model also learns the
unconditional velocity that audio guidance needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vividhead.models.flashhead import frame_windows, shift_timestep


@dataclass
class FlowBatch:
    """One batch in latent space, ready for the objective."""

    latent: torch.Tensor           # [B, C, F, H, W] clean latent of the window (x0)
    ref_latent: torch.Tensor       # [B, C, F, H, W] reference latent (repeated over F)
    audio_rows: torch.Tensor       # [B, r + N, L, D] audio rows of the window plus r rows before it (r = 2)
    motion_latents: torch.Tensor   # [B] long: latent frames of motion context per sample (1 or 2)


def audio_windows(rows: torch.Tensor, left_context: int, radius: int = 2) -> torch.Tensor:
    """[B, r + N, L, D] rows -> [B, N, 2*radius+1, L, D] windows, as the streaming engine windows a chunk."""
    return frame_windows(rows, radius)[:, left_context:]


def sample_timesteps(batch: int, shift: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """Flow times t' in (0, 1): uniform t warped by the sampler's shift."""
    t = torch.rand(batch, generator=generator, device="cpu").to(device)
    return shift_timestep(t, shift)


def flow_matching_loss(
    model: nn.Module,
    batch: FlowBatch,
    *,
    shift: float,
    audio_drop_prob: float,
    generator: torch.Generator,
    left_context: int,
) -> torch.Tensor:
    """Velocity MSE averaged over the generated (non-motion) latent frames of every sample."""
    x0 = batch.latent
    b, _, f = x0.shape[:3]
    device = x0.device
    noise = torch.randn(x0.shape, generator=generator, device="cpu", dtype=torch.float32).to(device, x0.dtype)
    t = sample_timesteps(b, shift, generator, device)
    tt = t.view(b, 1, 1, 1, 1).to(x0.dtype)
    x_t = tt * noise + (1 - tt) * x0
    frame = torch.arange(f, device=device).view(1, 1, f, 1, 1)
    is_motion = frame < batch.motion_latents.to(device).view(b, 1, 1, 1, 1)       # [B, 1, F, 1, 1]
    x_t = torch.where(is_motion, x0, x_t)
    keep = (torch.rand(b, generator=generator) >= audio_drop_prob).to(device)
    windows = audio_windows(batch.audio_rows, left_context) * keep.view(b, 1, 1, 1, 1).to(batch.audio_rows.dtype)
    v = model(x_t, t * 1000.0, batch.ref_latent, windows)
    target = noise - x0
    weight = (~is_motion).to(torch.float32).expand_as(x0)
    return ((v.float() - target.float()) ** 2 * weight).sum() / weight.sum()
