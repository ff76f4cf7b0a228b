"""Oracle-guided DMD distillation (paper section 3.2, eq. 4-5), following Self-Forcing.

Three networks take part, all initialised from stage 1:
- the generator G, a few-step student that samples exactly like `vividhead stream`;
- the frozen real score s_real (the teacher), queried with audio guidance;
- the fake score s_fake, trained by flow matching on G's outputs.

One generator update:
1. Self-forcing unroll: G generates chunks 1..k (k ~ U{1..K}), each conditioned on motion latents
   re-encoded from its own previous chunk (m_pred), exactly as streaming does. Chunks before k run
   the full sampler without a graph; chunk k stops at a sampled step t' and only that one network
   call keeps its graph (stochastic truncation).
2. DMD (eq. 4): G's output x0 is re-noised at a random t; the teacher scores it conditioned on the
   ground-truth motion latents m_gt (the oracle; m_pred when `oracle` is off), the fake score on
   m_pred. The normalised difference of their x0 predictions is the gradient applied through x0.
3. Plus lambda * ||x0 - z_gt||^2 (eq. 5). Motion-context latent frames are excluded from both.

Latent layout throughout: [B, C, F, H, W]; the first `m` latent frames of a chunk are its motion context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from vividhead.models.sampler import overwrite_motion, sampler_step
from vividhead.models.flashhead import sampling_timesteps, shift_timestep
from vividhead.training.dmd_config import DistillConfig

# A velocity predictor with FlashHeadDiT's positional call: (x_t [B,C,F,H,W], timestep [B] in
# [0, 1000], reference latent [B,C,F,H,W], per-frame audio windows) -> v. A FlashHeadDiT, or its
# DDP wrapper, is one.
Velocity = Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]
# Motion latents for the next chunk from a generated chunk latent (decode, keep the last
# motion-context frames, re-encode), as the streaming engine does.
MotionFn = Callable[[Tensor], Tensor]


@dataclass
class ChunkBatch:
    """K consecutive ground-truth chunks of a batch of clips, in latent space."""

    latents: Tensor                 # [B, K, C, F, H, W]: z_gt of every chunk
    motion_gt: list[Tensor]         # per chunk: [B, C, m_j, H, W] ground-truth motion latents (m_gt)
    reference: Tensor               # [B, C, F, H, W]: the reference latent, repeated over F
    audio: Tensor                   # [B, K, 33, 5, L, D]: per-frame audio windows of every chunk

    @property
    def num_chunks(self) -> int:
        return self.latents.shape[1]

    def to(self, device: torch.device, dtype: torch.dtype | None = None) -> "ChunkBatch":
        def move(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() and dtype else x.dtype)

        return ChunkBatch(move(self.latents), [move(m) for m in self.motion_gt], move(self.reference), move(self.audio))


@dataclass
class Unroll:
    """What a self-forcing unroll produced for the last (k-th) chunk, plus the trace of the way there."""

    x0: Tensor                      # [B, C, F, H, W]: G's prediction at step t' of chunk k (the only graph)
    chunk: int                      # k - 1 (0-based index of the last chunk)
    exit_step: int                  # t' (0-based sampler step)
    motion_pred: Tensor             # [B, C, m, H, W]: the motion latents chunk k was conditioned on
    motion_preds: list[Tensor] = field(default_factory=list)   # the m_pred of every chunk 0..k-1


@dataclass
class StepLog:
    """Scalars of one update, for the log."""

    values: dict[str, float]


def with_motion(x: Tensor, motion: Tensor) -> Tensor:
    """x with its first latent frames replaced by the motion latents (the sampler's own overwrite)."""
    return overwrite_motion(x, motion)


def generated_frames(x: Tensor, m: int) -> Tensor:
    """The latent frames a chunk generates: all but the first m (motion context)."""
    return x[:, :, m:]


class ChoiceRng:
    """Deterministic random draws per (seed, iteration, purpose), identical on every rank.

    Drawing from fresh generators keyed by the iteration makes a resumed run draw exactly what
    an uninterrupted one would, with no RNG state to carry.
    """

    def __init__(self, seed: int, rank: int = 0) -> None:
        self.seed = seed
        self.rank = rank

    def generator(self, iteration: int, purpose: int, per_rank: bool) -> torch.Generator:
        key = ((self.seed * 1_000_003 + iteration) * 101 + purpose) * 1009 + (self.rank if per_rank else 0)
        return torch.Generator().manual_seed(key % (2**63 - 1))


def guided_velocity(teacher: Velocity, x: Tensor, t: Tensor, reference: Tensor, audio: Tensor, scale: float) -> Tensor:
    """Teacher velocity with audio guidance: v_silent + scale * (v_audio - v_silent).

    Silence is all-zero audio windows, the condition stage 1 drops to (see `flow_matching`).
    """
    v_audio = teacher(x, 1000.0 * t, reference, audio).float()
    if scale == 1.0:
        return v_audio
    v_silent = teacher(x, 1000.0 * t, reference, torch.zeros_like(audio)).float()
    return v_silent + scale * (v_audio - v_silent)


class _WindowsAsContext:
    """Lets `sampler_step` (which passes `context=`) drive a Velocity that takes audio windows.

    The generator then embeds the audio inside the one call that keeps its graph, so its audio
    projection is trained too.
    """

    def __init__(self, model: Velocity) -> None:
        self.model = model

    def __call__(self, x: Tensor, timestep: Tensor, reference: Tensor, context: Tensor) -> Tensor:
        return self.model(x, timestep, reference, context)


class Distiller:
    """The three networks' maths: unroll, DMD + regression loss, fake-score loss.

    The networks are `Velocity` callables (a FlashHeadDiT or its DDP wrapper). The generator
    denoises with the streaming sampler's own `sampler_step` and timesteps.
    """

    def __init__(
        self,
        config: DistillConfig,
        generator: Velocity,
        teacher: Velocity,
        fake_score: Velocity,
        motion_fn: MotionFn,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.config = config
        self.generator = generator
        self.teacher = teacher
        self.fake_score = fake_score
        self.motion_fn = motion_fn
        self.schedule = sampling_timesteps(config.sampler_steps, config.sampler_shift)
        self.rng = ChoiceRng(seed, rank)

    # --- random draws -------------------------------------------------------------------------
    def draw_truncation(self, iteration: int, available_chunks: int) -> tuple[int, int]:
        """(k-1, t'): the last chunk index and the sampler step that keeps its graph."""
        g = self.rng.generator(iteration, purpose=1, per_rank=False)
        k_max = min(self.config.num_chunks, available_chunks)
        steps = len(self.schedule) - 1
        if not self.config.stochastic_truncation:
            return k_max - 1, steps - 1
        chunk = int(torch.randint(0, k_max, (1,), generator=g))
        step = int(torch.randint(0, steps, (1,), generator=g))
        return chunk, step

    def draw_time(self, batch: int, g: torch.Generator) -> Tensor:
        """Re-noising times in [t_min, t_max], warped by the configured shift."""
        u = torch.rand(batch, generator=g)
        t = self.config.t_min + (self.config.t_max - self.config.t_min) * u
        return shift_timestep(t, self.config.timestep_shift)

    # --- the self-forcing unroll --------------------------------------------------------------
    def unroll(self, batch: ChunkBatch, iteration: int, with_grad: bool) -> Unroll:
        """Generate chunks 0..k on G's own motion latents; keep the graph of step t' of chunk k only."""
        chunk_k, exit_step = self.draw_truncation(iteration, batch.num_chunks)
        g = self.rng.generator(iteration, purpose=2, per_rank=True)
        shape = batch.latents[:, 0].shape
        device, dtype = batch.latents.device, batch.latents.dtype
        motion = batch.motion_gt[0]          # cold start: the reference frame, identical for G and teacher
        motion_preds: list[Tensor] = []
        generator = _WindowsAsContext(self.generator)
        x0 = batch.latents[:, 0]
        for j in range(chunk_k + 1):
            motion_preds.append(motion)
            last = j == chunk_k
            x = torch.randn(shape, generator=g).to(device, dtype)
            for i in range(len(self.schedule) - 1):
                t, t_next = self.schedule[i], self.schedule[i + 1]
                exit_here = last and i == exit_step
                fresh = torch.randn(shape, generator=g).to(device, dtype) if t_next > 0 else torch.zeros_like(x)
                with torch.set_grad_enabled(with_grad and exit_here):
                    x, x0 = sampler_step(generator, x.detach(), t, t_next, batch.reference,
                                         batch.audio[:, j], motion, fresh)
                if exit_here:
                    break
            if not last:
                with torch.no_grad():
                    motion = self.motion_fn(with_motion(x0, motion).detach())
        return Unroll(x0=with_motion(x0, motion), chunk=chunk_k, exit_step=exit_step,
                      motion_pred=motion, motion_preds=motion_preds)

    def teacher_motion(self, batch: ChunkBatch, unroll: Unroll) -> Tensor:
        """The motion latents the teacher is conditioned on: m_gt (oracle) or G's own m_pred."""
        return batch.motion_gt[unroll.chunk] if self.config.oracle else unroll.motion_pred

    # --- generator loss -----------------------------------------------------------------------
    def generator_loss(self, batch: ChunkBatch, iteration: int) -> tuple[Tensor, StepLog]:
        """DMD (eq. 4) + lambda * latent regression (eq. 5) for one unroll."""
        out = self.unroll(batch, iteration, with_grad=True)
        m = out.motion_pred.shape[2]
        x0 = out.x0
        g = self.rng.generator(iteration, purpose=3, per_rank=True)
        t = self.draw_time(x0.shape[0], g).to(x0.device, x0.dtype)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        tb = t.view(-1, 1, 1, 1, 1)
        with torch.no_grad():
            x_t = tb * noise + (1 - tb) * x0.detach()
            real_in = with_motion(x_t, self.teacher_motion(batch, out))
            fake_in = with_motion(x_t, out.motion_pred)
            v_real = guided_velocity(self.teacher, real_in, t, batch.reference, batch.audio[:, out.chunk],
                                     self.config.guidance_scale)
            v_fake = self.fake_score(fake_in, 1000.0 * t, batch.reference, batch.audio[:, out.chunk]).float()
            real_x0 = generated_frames(real_in - tb * v_real, m)
            fake_x0 = generated_frames(fake_in - tb * v_fake, m)
            gen = generated_frames(x0.detach(), m)
            # DMD2's normaliser: the mean distance of G's output to the teacher's estimate.
            norm = (gen - real_x0).abs().mean(dim=(1, 2, 3, 4), keepdim=True).clamp_min(1e-6)
            grad = torch.nan_to_num((fake_x0 - real_x0) / norm)
        pred = generated_frames(x0, m)
        dmd = 0.5 * F.mse_loss(pred.float(), (pred - grad).detach().float())
        target = generated_frames(batch.latents[:, out.chunk], m)
        reg = F.mse_loss(pred.float(), target.float())
        loss = dmd + self.config.regression_weight * reg
        log = StepLog({"dmd": float(dmd.detach()), "reg": float(reg.detach()), "g_loss": float(loss.detach()),
                       "chunk": out.chunk + 1, "exit_step": out.exit_step, "t": float(t.mean())})
        return loss, log

    # --- fake score loss ----------------------------------------------------------------------
    def fake_score_loss(self, batch: ChunkBatch, iteration: int) -> tuple[Tensor, StepLog]:
        """Flow matching of s_fake on G's (detached) outputs, conditioned on G's own motion latents."""
        with torch.no_grad():
            out = self.unroll(batch, iteration, with_grad=False)
        m = out.motion_pred.shape[2]
        x0 = out.x0.detach()
        g = self.rng.generator(iteration, purpose=4, per_rank=True)
        t = self.draw_time(x0.shape[0], g).to(x0.device, x0.dtype)
        noise = torch.randn(x0.shape, generator=g).to(x0.device, x0.dtype)
        tb = t.view(-1, 1, 1, 1, 1)
        x_t = with_motion(tb * noise + (1 - tb) * x0, out.motion_pred)
        v = self.fake_score(x_t, 1000.0 * t, batch.reference, batch.audio[:, out.chunk])
        loss = F.mse_loss(generated_frames(v, m).float(), generated_frames(noise - x0, m).float())
        return loss, StepLog({"fake_loss": float(loss.detach())})
