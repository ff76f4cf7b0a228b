"""The distilled few-step sampler of FlashHead (FLASHHEAD_FORMAT.md, "Streaming geometry and sampler").

Flow convention x_t = t * noise + (1 - t) * x0, the model predicts v. One step from t to t_next:

    x_t[:, :, :m] = motion latents          (motion context overwrites the first latent frames)
    v      = model(x_t, 1000 * t, reference_latent, context)
    x0     = x_t - t * v
    x_next = (1 - t_next) * x0 + t_next * fresh_noise

The times are `sampling_timesteps(steps, shift)`: 1000, 750, 500, 250 (4 steps) shifted by
t' = shift * t / (1 + (shift - 1) * t), then 0.
"""

from __future__ import annotations

import torch

from vividhead.models.flashhead import FlashHeadDiT, sampling_timesteps


def overwrite_motion(x: torch.Tensor, motion: torch.Tensor | None) -> torch.Tensor:
    """x [B, C, F, H, W] with its first motion.shape[2] latent frames replaced by `motion`."""
    if motion is None:
        return x
    x = x.clone()
    x[:, :, : motion.shape[2]] = motion.to(x.dtype)
    return x


def sampler_step(
    model: FlashHeadDiT, x_t: torch.Tensor, t: float, t_next: float, reference: torch.Tensor,
    context: torch.Tensor, motion: torch.Tensor | None, noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One documented update; returns (x_next, x0)."""
    x_t = overwrite_motion(x_t, motion)
    timestep = torch.full((x_t.shape[0],), 1000.0 * t, device=x_t.device)
    v = model(x_t, timestep, reference, context=context).float()
    x0 = x_t.float() - t * v
    return (1.0 - t_next) * x0 + t_next * noise.float(), x0


@torch.inference_mode()
def sample_chunk(
    model: FlashHeadDiT, reference: torch.Tensor, context: torch.Tensor, motion: torch.Tensor | None,
    *, steps: int = 4, shift: float = 5.0, generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Denoise one chunk from pure noise; returns clean latents [B, C, F, H, W] with the motion frames kept."""
    times = sampling_timesteps(steps, shift)

    def noise() -> torch.Tensor:
        return torch.randn(reference.shape, generator=generator, device=reference.device, dtype=torch.float32)

    x = noise()
    for t, t_next in zip(times[:-1], times[1:]):
        x, x0 = sampler_step(model, x, t, t_next, reference, context, motion, noise() if t_next > 0 else torch.zeros_like(x))
    return overwrite_motion(x0, motion)
