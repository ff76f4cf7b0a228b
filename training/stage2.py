"""Stage-2 training loop: oracle-guided DMD distillation of a stage-1 teacher (paper eq. 4-5).

`DistillTrainer` owns the two trained networks (generator, fake score), the frozen teacher and
their optimisers, and runs one loop iteration at a time: a fake-score update every iteration and a
generator update every `fake_updates_per_generator`-th (the paper's 1:5 ratio). `run(config)` is
what `vividhead train` calls for a `stage: 2` config: it loads the networks, streams K-chunk
windows from the shards, logs the DMD and regression losses, and writes resumable checkpoints
whose generator folder is in the release layout.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT, Geometry
from vividhead.models.release import MODEL_FOLDERS, load_release, model_folder
from vividhead.models.vae import SpaceToDepthCodec, VideoCodec, load_codec
from vividhead.training.checkpoint import Checkpointable
from vividhead.training.config import TrainConfig, expand_shards
from vividhead.training.dataset import AUDIO_LEFT_CONTEXT, BucketBatcher, ShardDataset, sample_stream
from vividhead.training.distributed import (
    DistContext, init_distributed, mean_across_ranks, shutdown, use_fsdp, wrap_model,
)
from vividhead.training.dmd import ChunkBatch, Distiller, MotionFn, Velocity
from vividhead.training.dmd_config import DistillConfig
from vividhead.training.flow_matching import audio_windows
from vividhead.training.run import TrainingRun, report, warmup_schedule
from vividhead.training.stage1 import check_audio, freeze_unused

FAKE_FOLDER = "FakeScore"          # the fake score's release-layout folder inside a checkpoint


def _adamw(params, lr: float, cfg: DistillConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=lr, betas=cfg.betas,
                             weight_decay=cfg.weight_decay)


class DistillTrainer:
    """Generator + fake score updates at the configured ratio, with exactly resumable state."""

    def __init__(
        self,
        config: DistillConfig,
        generator: nn.Module,
        teacher: nn.Module,
        fake_score: nn.Module,
        velocity: Callable[[nn.Module], Velocity],
        motion_fn: MotionFn,
        seed: int = 0,
        rank: int = 0,
    ) -> None:
        self.config = config
        self.generator, self.teacher, self.fake_score = generator, teacher, fake_score
        teacher.requires_grad_(False).eval()
        self.distiller = Distiller(config, velocity(generator), velocity(teacher), velocity(fake_score),
                                   motion_fn, seed=seed, rank=rank)
        self.opt_generator = _adamw(generator.parameters(), config.lr_generator, config)
        self.opt_fake = _adamw(fake_score.parameters(), config.lr_fake, config)
        self.sched_generator = warmup_schedule(self.opt_generator, config.warmup_steps, 0)
        self.sched_fake = warmup_schedule(self.opt_fake, config.warmup_steps * config.fake_updates_per_generator, 0)
        self.iteration = 0
        self.generator_steps = 0
        self.fake_steps = 0

    def trains_generator(self, iteration: int) -> bool:
        """Self-Forcing's schedule: G updates on every ratio-th iteration, s_fake on every one."""
        return iteration % self.config.fake_updates_per_generator == 0

    def _update(self, loss: torch.Tensor, module: nn.Module, optimizer, scheduler) -> float:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.config.grad_clip)
        if math.isfinite(float(norm)):
            optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def step(self, batch: ChunkBatch) -> dict[str, float]:
        """One loop iteration; returns the logged scalars (generator ones only on its iterations)."""
        logs: dict[str, float] = {"iteration": self.iteration}
        if self.trains_generator(self.iteration):
            self.generator.train()
            loss, log = self.distiller.generator_loss(batch, self.iteration)
            logs.update(log.values)
            logs["g_grad_norm"] = self._update(loss, self.generator, self.opt_generator, self.sched_generator)
            self.generator_steps += 1
        self.fake_score.train()
        loss, log = self.distiller.fake_score_loss(batch, self.iteration)
        logs.update(log.values)
        logs["fake_grad_norm"] = self._update(loss, self.fake_score, self.opt_fake, self.sched_fake)
        self.fake_steps += 1
        self.iteration += 1
        return logs

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the frozen teacher (random draws are keyed by iteration)."""
        return {
            "generator": self.generator.state_dict(),
            "fake_score": self.fake_score.state_dict(),
            "opt_generator": self.opt_generator.state_dict(),
            "opt_fake": self.opt_fake.state_dict(),
            "sched_generator": self.sched_generator.state_dict(),
            "sched_fake": self.sched_fake.state_dict(),
            "counters": {"iteration": self.iteration, "generator_steps": self.generator_steps,
                         "fake_steps": self.fake_steps},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.fake_score.load_state_dict(state["fake_score"])
        self.opt_generator.load_state_dict(state["opt_generator"])
        self.opt_fake.load_state_dict(state["opt_fake"])
        self.sched_generator.load_state_dict(state["sched_generator"])
        self.sched_fake.load_state_dict(state["sched_fake"])
        counters = state["counters"]
        self.iteration = int(counters["iteration"])
        self.generator_steps = int(counters["generator_steps"])
        self.fake_steps = int(counters["fake_steps"])


# ------------------------------------------------------------------------------------------ data
def span_frames(geometry: Geometry, chunks: int) -> int:
    """Video frames that `chunks` consecutive streaming chunks cover: 33 + (K-1) * new frames."""
    return geometry.frames + (chunks - 1) * geometry.new_frames


def motion_from_chunk(codec: VideoCodec, latent: torch.Tensor, geometry: Geometry) -> torch.Tensor:
    """The next chunk's motion latents, as the streaming engine makes them: decode the chunk (at the
    codec's native size when it has one, as the engine does), re-encode its last motion-context
    frames (5 for Pro/tiny, 9 for Lite) -> [B, C, 2, H, W].

    The space-to-depth codec decodes every latent frame on its own, so for it only the latent
    frames behind those video frames are decoded (the same pixels, a fraction of the work).
    """
    if isinstance(codec, SpaceToDepthCodec):
        tail = -(-(geometry.motion_frames - 1) // codec.temporal_stride) + 1     # latents behind them
        latent = latent[:, :, -(tail + 1):]                                         # + one decoded as "first"
    native = getattr(codec, "native_size", None)
    video = codec.decode(latent) if native is None else codec.decode(latent, size=native)
    return codec.encode(video[:, :, -geometry.motion_frames:]).to(latent.dtype)


def to_chunks(samples: list[dict[str, Any]], codec: VideoCodec, geometry: Geometry, chunks: int,
              device: torch.device) -> ChunkBatch:
    """Cut windows of K chunks into per-chunk latents, ground-truth motion latents and audio windows.

    Chunk j covers video frames [j * new, j * new + 33) of the window, as streaming does. Its
    ground-truth motion latents m_gt are its own first latent frames (the causal codec encodes the
    first 1 + (m-1)*s frames on their own), i.e. the last motion-context frames of chunk j-1. The
    reference image is the window's first frame, as a stream starts from its reference image, so
    chunk 0's cold-start motion (the reference latent's first frame) is also its ground truth.
    """
    video = torch.stack([s["video"] for s in samples]).to(device)                     # [B, 3, T, H, W]
    rows = torch.stack([s["audio"] for s in samples]).to(device)                       # [B, T + 2, L, D]
    n, new, m = geometry.frames, geometry.new_frames, geometry.motion_latents
    with torch.no_grad():
        latents = torch.stack([codec.encode(video[:, :, j * new: j * new + n]).float()
                               for j in range(chunks)], dim=1)                        # [B, K, C, F, h, w]
        reference = codec.encode(video[:, :, :1].expand(-1, -1, n, -1, -1)).float()   # [B, C, F, h, w]
    audio = torch.stack([audio_windows(rows[:, j * new: j * new + n + AUDIO_LEFT_CONTEXT], AUDIO_LEFT_CONTEXT)
                         for j in range(chunks)], dim=1)                              # [B, K, 33, 5, L, D]
    motion = [reference[:, :, :1]] + [latents[:, j, :, :m] for j in range(1, chunks)]
    return ChunkBatch(latents=latents, motion_gt=motion, reference=reference, audio=audio)


def skip_guard(samples: Iterator[dict[str, Any]], limit: int, frames: int) -> Iterator[dict[str, Any]]:
    """Pass samples through; fail with a clear message when `limit` in a row are too short."""
    run = 0
    for sample in samples:
        run = run + 1 if "skip" in sample else 0
        if run >= limit:
            raise ValueError(f"no clip in data.shards is long enough: stage 2 needs windows of {frames} "
                             f"frames (distill.num_chunks chunks); last reason: {sample['skip']}. "
                             "Lower distill.num_chunks or use longer clips.")
        yield sample


# ------------------------------------------------------------------------------------------ networks
@dataclass
class Networks:
    """The three networks of stage 2 and the codec they share."""

    generator: FlashHeadDiT
    teacher: FlashHeadDiT
    fake_score: FlashHeadDiT
    codec: VideoCodec
    teacher_dir: Path


def _load(path: Path, preset: str, role: str) -> FlashHeadDiT:
    model = load_release(model_folder(path, preset))
    if model.config.preset != preset:
        raise ValueError(f"distill.{role}: {path} holds a {model.config.preset} model, "
                         f"the config asks for preset {preset}")
    return model


def load_networks(config: TrainConfig, device: torch.device) -> Networks:
    """Teacher from `distill.teacher` (else `model.init`); G and s_fake from theirs, else the teacher."""
    distill, preset = config.distill, config.model.preset
    teacher_path = distill.teacher or config.model.init
    if teacher_path is None:
        raise ValueError("stage 2 needs a teacher: set distill.teacher (or model.init / --init) to a stage-1 "
                         "run folder, checkpoint folder or release model folder")
    teacher_dir = model_folder(teacher_path, preset)
    teacher = _load(teacher_dir, preset, "teacher").to(device)
    generator = _load(distill.generator_init or teacher_dir, preset, "generator_init").to(device)
    fake = _load(distill.fake_score_init or teacher_dir, preset, "fake_score_init").to(device)
    freeze_unused(generator)
    freeze_unused(fake)
    codec = load_codec(preset, teacher_dir, teacher.config.codec, device=device, vae_path=config.model.vae)
    return Networks(generator, teacher, fake, codec, teacher_dir)


# ------------------------------------------------------------------------------------------ loop
def train(config: TrainConfig, ctx: DistContext | None = None) -> int:
    """Run (or resume) stage 2 until `config.steps` generator updates; returns the last step."""
    job = TrainingRun(config, ctx or init_distributed())
    ctx = job.ctx
    distill, preset = config.distill, config.model.preset
    geometry = GEOMETRY[preset]
    nets = load_networks(config, ctx.device)
    on_gpu = ctx.device.type == "cuda"
    for model in (nets.generator, nets.fake_score):
        model.gradient_checkpointing = config.model.gradient_checkpointing and on_gpu
    fsdp = use_fsdp(config.model.fsdp, preset, ctx)
    generator, fake = wrap_model(nets.generator, ctx, fsdp), wrap_model(nets.fake_score, ctx, fsdp)
    trainer = DistillTrainer(distill, generator, nets.teacher, fake, velocity=lambda m: m,
                             motion_fn=lambda z: motion_from_chunk(nets.codec, z, geometry),
                             seed=config.seed, rank=ctx.rank)
    folder = MODEL_FOLDERS[preset]
    objects = Checkpointable({folder: generator, FAKE_FOLDER: fake},
                             {folder: trainer.opt_generator, FAKE_FOLDER: trainer.opt_fake},
                             {folder: trainer.sched_generator, FAKE_FOLDER: trainer.sched_fake}, fsdp=fsdp)

    step, rank_state = job.resume(objects, what="generator step")
    ratio = distill.fake_updates_per_generator
    trainer.iteration, trainer.generator_steps, trainer.fake_steps = step * ratio, step, step * ratio

    frames = span_frames(geometry, distill.num_chunks)
    dataset = ShardDataset(
        expand_shards(config.data.shards), frames=frames, buckets=list(config.data.buckets),
        motion_full_prob=1.0, shuffle_window=config.data.shuffle_window, seed=config.seed,
        rank=ctx.rank, world_size=ctx.world_size,
        start_position=rank_state["data"]["next_position"] if rank_state else 0,
    )
    batcher = BucketBatcher(config.optim.batch_size)
    if rank_state is not None:
        batcher.restore(rank_state["data"], dataset)
    stream = skip_guard(sample_stream(dataset, config.data.num_workers), 4 * len(dataset) + 8, frames)
    batches = batcher.batches(stream)

    try:
        while step < config.steps:
            tick = time.perf_counter()
            record: dict[str, Any] = {}
            fake_losses = []
            for _ in range(ratio):       # one generator update, then `ratio` fake-score updates
                samples = next(batches)
                check_audio(samples, nets.generator.config)
                batch = to_chunks(samples, nets.codec, geometry, distill.num_chunks, ctx.device)
                with job.autocast():
                    logs = trainer.step(batch)
                fake_losses.append(logs["fake_loss"])
                record.update({k: v for k, v in logs.items() if k not in ("fake_loss", "iteration")})
            step += 1
            for name in ("dmd", "reg", "g_loss"):
                record[name] = float(mean_across_ranks(torch.tensor(record[name], device=ctx.device), ctx))
            record.update(step=step, loss=record["g_loss"], lr=trainer.sched_generator.get_last_lr()[0],
                          fake_loss=float(mean_across_ranks(torch.tensor(sum(fake_losses) / ratio, device=ctx.device), ctx)),
                          step_s=round(time.perf_counter() - tick, 3))
            job.log(record)
            if ctx.is_main and (step % config.log_every == 0 or step == config.steps):
                print(f"step {step:5d}/{config.steps}  dmd {record['dmd']:.4f}  reg {record['reg']:.4f}  "
                      f"fake {record['fake_loss']:.4f}  k={record['chunk']} t'={record['exit_step']}  "
                      f"{record['step_s']:.2f} s/step", flush=True)
            job.save(step, objects, {"data": batcher.state()}, teacher=str(nets.teacher_dir))
    finally:
        job.losses.close()
    student = job.finish(objects, folder)
    if ctx.is_main:
        print(f"stage 2: generator steps -> {step} in {job.seconds:.1f} s; student: {student}", flush=True)
    return step


def run(config: TrainConfig) -> int:
    """Entry point of `vividhead train` for stage-2 configs: distil, then print the loss curves."""
    ctx = init_distributed()
    try:
        train(config, ctx)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        report(config, "generator loss (DMD + lambda * regression):")
    return 0
