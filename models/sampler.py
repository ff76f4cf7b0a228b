"""The distilled few-step sampler of FlashHead, as the authors' streaming code runs it.

Flow convention x_t = t * noise + (1 - t) * x0, the model predicts v. One step from t to t_next:

    x_t[:, :, :m] = motion latents          (motion context overwrites the first latent frames)
    v      = model(x_t, 1000 * t, reference_latent, context)
    x0     = x_t - t * v
    x_next = (1 - t_next) * x0 + t_next * fresh_noise

The times are `sampling_timesteps(steps, shift)` (models/flashhead.py). The release's facts kept here:
fresh noise is drawn at EVERY step, the last one included (there it is multiplied by 0), so a chunk of
n steps advances the generator n + 1 times; and the update runs in the latent's dtype (bf16 on GPU),
with t and t_next cast to it. Training (models in fp32) sees the plain float update.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vividhead.models.flashhead import sampling_timesteps

Denoiser = Callable[..., torch.Tensor]     # FlashHeadDiT or anything with its call signature


def overwrite_motion(x: torch.Tensor, motion: torch.Tensor | None) -> torch.Tensor:
    """x [B, C, F, H, W] with its first motion.shape[2] latent frames replaced by `motion`."""
    if motion is None:
        return x
    x = x.clone()
    x[:, :, : motion.shape[2]] = motion.to(x.dtype)
    return x


def sampler_step(
    model: Denoiser, x_t: torch.Tensor, t: float, t_next: float, reference: torch.Tensor,
    context: torch.Tensor, motion: torch.Tensor | None, noise: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One documented update in x_t's dtype; returns (x_next, x0)."""
    x_t = overwrite_motion(x_t, motion)
    timestep = torch.full((x_t.shape[0],), 1000.0 * t, device=x_t.device)    # float32, as the release passes it
    v = model(x_t, timestep, reference, context=context).to(x_t.dtype)
    t_, t_next_ = (torch.tensor(value, dtype=torch.float32).to(x_t.dtype).item() for value in (t, t_next))
    x0 = x_t - t_ * v
    return (1.0 - t_next_) * x0 + t_next_ * noise.to(x_t.dtype), x0


def draw_noise(shape: torch.Size, generators: torch.Generator | Sequence[torch.Generator] | None,
               device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Gaussian noise [B, ...]: from one generator, or one generator per batch row (one per stream)."""
    if generators is None or isinstance(generators, torch.Generator):
        return torch.randn(shape, generator=generators, device=device, dtype=dtype)
    if len(generators) != shape[0]:
        raise ValueError(f"{len(generators)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, device=device, dtype=dtype) for g in generators])


@torch.inference_mode()
def sample_chunk(
    model: Denoiser, reference: torch.Tensor, context: torch.Tensor, motion: torch.Tensor | None,
    *, steps: int = 4, shift: float = 5.0,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
) -> torch.Tensor:
    """Denoise one chunk from pure noise; returns clean latents [B, C, F, H, W] (reference's dtype), motion kept."""
    times = sampling_timesteps(steps, shift)
    x = x0 = draw_noise(reference.shape, generator, reference.device, reference.dtype)
    for t, t_next in zip(times[:-1], times[1:]):
        fresh = draw_noise(reference.shape, generator, reference.device, reference.dtype)   # also at the last step
        x, x0 = sampler_step(model, x, t, t_next, reference, context, motion, fresh)
    return overwrite_motion(x0, motion)
