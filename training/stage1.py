"""Stage 1: streaming-aware spatiotemporal pre-training of FlashHead by flow matching (paper 3.2, eq. 1).

The loop, per step: take a bucket batch from the shard stream, encode it to latents (or read them
from the latent cache), draw shifted flow times, compute the velocity MSE on the generated frames,
and update with AdamW after a linear warm-up. Checkpoints land in the release layout with all the
state an exact resume needs; the loss goes to `loss.jsonl` (and TensorBoard when installed).
Runs on one CPU, one GPU (bf16 autocast, gradient checkpointing) or many under torchrun.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vividhead.media import read_npy
from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT
from vividhead.models.release import MODEL_FOLDERS, load_release, model_folder
from vividhead.models.vae import VideoCodec, load_codec
from vividhead.shards import read_member
from vividhead.training.checkpoint import Checkpointable, capture_rng, restore_rng
from vividhead.training.config import TrainConfig, expand_shards
from vividhead.training.dataset import (
    AUDIO_LEFT_CONTEXT, BucketBatcher, LatentCache, ShardDataset, module_fingerprint, sample_stream, training_entries,
)
from vividhead.training.distributed import (
    DistContext, init_distributed, mean_across_ranks, shutdown, use_fsdp, wrap_model,
)
from vividhead.training.flow_matching import FlowBatch, flow_matching_loss
from vividhead.training.run import TrainingRun, report, warmup_schedule


@dataclass
class RunSummary:
    """What a finished (or resumed-and-finished) run reports."""

    first_step: int
    last_step: int
    losses: list[float]
    model_dir: Path
    seconds: float
    model: torch.nn.Module            # the trained model as wrapped for this run (DDP / FSDP / plain)


# ------------------------------------------------------------------------------------------ setup
def build_model(config: TrainConfig, audio_shape: tuple[int, int] | None = None) -> FlashHeadDiT:
    """The preset's DiT, from `model.init` (release weights) when given, else seeded random init.

    A fresh `tiny` model takes its audio width (layers, dim) from the shards' audio.npy, so it trains
    on log-mel or wav2vec2 features alike; lite and pro keep the release's wav2vec2 width.
    """
    preset = config.model.preset
    if config.model.init is not None:
        model = load_release(model_folder(config.model.init, preset))
        if model.config.preset != preset:
            raise ValueError(f"model.init: {config.model.init} holds a {model.config.preset} model, "
                             f"the config asks for preset {preset}")
        return model.train()
    torch.manual_seed(config.seed)
    overrides: dict[str, Any] = dict(config.model.overrides)
    if preset == "tiny" and audio_shape is not None:
        overrides |= {"audio_layers": audio_shape[0], "audio_dim": audio_shape[1]}
    return FlashHeadDiT.for_preset(preset, **overrides).train()


# Released modules the forward pass never uses (kept so checkpoints load strictly): not trained.
UNUSED_MODULES = ("text_embedding", "audio_emb")


def freeze_unused(model: FlashHeadDiT) -> None:
    """Freeze the kept-but-unused release modules, so DDP sees no parameter without a gradient."""
    for name in UNUSED_MODULES:
        getattr(model, name).requires_grad_(False)


def peek_audio_shape(shards: list[Path]) -> tuple[int, int]:
    """(layers, dim) of the first sample's audio.npy."""
    for shard in shards:
        entries = training_entries(shard)
        if entries:
            rows = read_npy(read_member(entries[0], "audio.npy"))
            if rows.ndim != 3:
                raise ValueError(f"{shard}: `{entries[0].key}`.audio.npy has shape {rows.shape}, expected [frames, layers, dim]")
            return int(rows.shape[1]), int(rows.shape[2])
    raise ValueError(f"no samples in the {len(shards)} shard file(s) of data.shards")


def build_codec(config: TrainConfig, model: FlashHeadDiT, device: torch.device) -> VideoCodec:
    preset = config.model.preset
    vae = vae_folder(config)
    if preset != "tiny" and vae is None:
        name = {"lite": "VAE_LTX", "pro": "VAE_Wan"}[preset]
        raise ValueError(f"model.vae: the {preset} preset needs its {name} folder (or model.init pointing at a "
                         f"release folder that holds {name}/)")
    return load_codec(preset, vae or Path("."), model.config.codec, device=device, vae_path=vae)


def vae_folder(config: TrainConfig) -> Path | None:
    """The VAE folder a lite / pro run uses (model.vae, else next to model.init); None for tiny."""
    from vividhead.models.vae import find_vae

    name = {"lite": "VAE_LTX", "pro": "VAE_Wan"}.get(config.model.preset)
    if name is None:
        return None
    if config.model.vae is not None:
        return config.model.vae
    return find_vae(config.model.init, name) if config.model.init is not None else None


def codec_id(codec: VideoCodec) -> str:
    """A stable identity of the codec for the latent cache."""
    vae = getattr(codec, "vae", None)
    if vae is not None:
        return module_fingerprint(vae)
    fields = ",".join(f"{k}={v}" for k, v in sorted(vars(codec).items()) if isinstance(v, (int, float, str)))
    return f"{type(codec).__name__}-{fields}"


def check_geometry(config: TrainConfig, model: FlashHeadDiT) -> None:
    stride = model.temporal_stride
    frames = config.data.frames
    if (frames - 1) % stride:
        raise ValueError(f"data.frames ({frames}) must be 1 + a multiple of the temporal stride {stride}")
    if frames != GEOMETRY[config.model.preset].frames:
        print(f"note: training windows of {frames} frames; streaming uses {GEOMETRY[config.model.preset].frames}",
              file=sys.stderr)


# ------------------------------------------------------------------------------------------ latents
def check_audio(samples: list[dict[str, Any]], model_config: Any) -> None:
    """The shards' audio.npy rows must have the width the model was built for."""
    layers, dim = samples[0]["audio"].shape[-2:]
    if (layers, dim) != (model_config.audio_layers, model_config.audio_dim):
        raise ValueError(
            f"sample `{samples[0]['key']}`: audio.npy rows are [{layers}, {dim}] (layers, dim) but the "
            f"{model_config.preset} model expects [{model_config.audio_layers}, {model_config.audio_dim}] "
            "(wav2vec2-base: 12 x 768; the log-mel default: 1 x 80). Rebuild the shards' audio features "
            "with the matching encoder.")


def to_latents(samples: list[dict[str, Any]], codec: VideoCodec, cache: LatentCache | None,
               device: torch.device, motion_latents: int) -> FlowBatch:
    """Encode the samples that carry pixels (storing them in the cache), keep the cached ones."""
    need = [i for i, s in enumerate(samples) if "latent" not in s]
    if need:
        video = torch.stack([samples[i]["video"] for i in need]).to(device)               # [b, 3, T, H, W]
        frames = video.shape[2]
        ref = torch.stack([samples[i]["ref"] for i in need]).to(device)                   # [b, 3, H, W]
        with torch.no_grad():
            latents = codec.encode(video).float()
            # The reference latent is the encoding of the reference image repeated over the chunk.
            ref_latents = codec.encode(ref[:, :, None].expand(-1, -1, frames, -1, -1)).float()
        for row, i in enumerate(need):
            samples[i]["latent"], samples[i]["ref_latent"] = latents[row], ref_latents[row]
            if cache is not None:
                s = samples[i]
                size = tuple(s["size"])
                LatentCache.store(cache.window_path(s["key"], s["start"], frames, size), latents[row])
                LatentCache.store(cache.ref_path(s["key"], s["ref_index"], size), ref_latents[row])
    return FlowBatch(
        latent=torch.stack([s["latent"] for s in samples]).to(device),
        ref_latent=torch.stack([s["ref_latent"] for s in samples]).to(device),
        audio_rows=torch.stack([s["audio"] for s in samples]).to(device),
        motion_latents=torch.tensor([motion_latents if s["full_motion"] else 1 for s in samples]),
    )


# ------------------------------------------------------------------------------------------ loop
@dataclass
class Trainer:
    """The model, codec and optimiser state of one rank's stage-1 run."""

    job: TrainingRun
    config: TrainConfig
    ctx: DistContext
    model: FlashHeadDiT                # the module itself
    wrapped: torch.nn.Module           # as trained: DDP / FSDP / the module
    codec: VideoCodec
    trainable: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    objects: Checkpointable
    flow_rng: torch.Generator          # timesteps, noise, audio drop: saved with each checkpoint


def setup(job: TrainingRun, shards: list[Path]) -> Trainer:
    """Build the model (fresh or from `model.init`), its codec, the wrapper and AdamW with warm-up."""
    config, ctx = job.config, job.ctx
    preset = config.model.preset
    model = build_model(config, peek_audio_shape(shards)).to(ctx.device)
    check_geometry(config, model)
    freeze_unused(model)
    model.gradient_checkpointing = config.model.gradient_checkpointing and ctx.device.type == "cuda"
    codec = build_codec(config, model, ctx.device)
    fsdp = use_fsdp(config.model.fsdp, preset, ctx)
    wrapped = wrap_model(model, ctx, fsdp)
    opt = config.optim
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=opt.lr, betas=opt.betas, eps=opt.eps, weight_decay=opt.weight_decay)
    scheduler = warmup_schedule(optimizer, opt.warmup_steps, config.steps, cosine=opt.schedule == "cosine")
    objects = Checkpointable({MODEL_FOLDERS[preset]: wrapped}, {"model": optimizer}, {"model": scheduler}, fsdp=fsdp)
    flow_rng = torch.Generator().manual_seed(config.seed * 100_003 + ctx.rank)
    return Trainer(job, config, ctx, model, wrapped, codec, trainable, optimizer, scheduler, objects, flow_rng)


def open_data(trainer: Trainer, shards: list[Path], rank_state: dict[str, Any] | None
              ) -> tuple[BucketBatcher, Iterator[list[dict[str, Any]]], LatentCache | None]:
    """This rank's bucket batches from its data position (0, or the checkpoint's)."""
    config, ctx = trainer.config, trainer.ctx
    cache = None
    if config.data.latent_cache is not None:
        cache = LatentCache(Path(config.data.latent_cache), codec_id(trainer.codec))
    batcher = BucketBatcher(config.optim.batch_size)
    dataset = ShardDataset(
        shards, frames=config.data.frames, buckets=list(config.data.buckets),
        motion_full_prob=config.data.motion_full_prob, shuffle_window=config.data.shuffle_window,
        seed=config.seed, rank=ctx.rank, world_size=ctx.world_size,
        start_position=rank_state["data"]["next_position"] if rank_state else 0,
        cache=cache, cache_stride=config.data.cache_stride,
    )
    if rank_state is not None:
        batcher.restore(rank_state["data"], dataset)
    return batcher, batcher.batches(sample_stream(dataset, config.data.num_workers)), cache


def train_step(trainer: Trainer, batch: FlowBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """One AdamW update on the flow-matching loss; returns (loss, gradient norm before clipping)."""
    config = trainer.config
    with trainer.job.autocast():
        loss = flow_matching_loss(trainer.wrapped, batch, shift=config.flow.timestep_shift,
                                  audio_drop_prob=config.flow.audio_drop_prob, generator=trainer.flow_rng,
                                  left_context=AUDIO_LEFT_CONTEXT)
    trainer.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(trainer.trainable, config.optim.grad_clip)
    trainer.optimizer.step()
    trainer.scheduler.step()
    return loss, grad_norm


def train(config: TrainConfig, ctx: DistContext | None = None, progress: bool = True) -> RunSummary:
    """Run (or resume) stage 1 until `config.steps`; returns the losses of the steps run here."""
    job = TrainingRun(config, ctx or init_distributed())
    ctx = job.ctx
    shards = expand_shards(config.data.shards)
    trainer = setup(job, shards)
    step, rank_state = job.resume(trainer.objects)
    batcher, batches, cache = open_data(trainer, shards, rank_state)
    if rank_state is not None:  # after the loader drew its worker seeds: the loop's RNG continues exactly
        restore_rng(rank_state["rng"], {"flow": trainer.flow_rng})

    motion_latents = GEOMETRY[config.model.preset].motion_latents
    bar = None
    if progress and ctx.is_main:
        from tqdm import tqdm

        bar = tqdm(total=config.steps, initial=step, desc=f"stage 1 ({config.model.preset})", unit="step",
                   dynamic_ncols=True)
    first_step, losses = step, []
    try:
        while step < config.steps:
            tick = time.perf_counter()
            samples = next(batches)
            check_audio(samples, trainer.model.config)
            batch = to_latents(samples, trainer.codec, cache, ctx.device, motion_latents)
            data_s = time.perf_counter() - tick
            loss, grad_norm = train_step(trainer, batch)
            step += 1
            mean_loss = float(mean_across_ranks(loss, ctx))
            losses.append(mean_loss)
            lr = trainer.scheduler.get_last_lr()[0]
            job.log({"step": step, "loss": mean_loss, "lr": lr, "grad_norm": float(grad_norm),
                     "data_s": round(data_s, 4), "step_s": round(time.perf_counter() - tick, 4),
                     "samples": config.optim.batch_size * ctx.world_size})
            if bar is not None:
                bar.update(1)
                if step % config.log_every == 0:
                    bar.set_postfix(loss=f"{mean_loss:.4f}", lr=f"{lr:.2e}")
            job.save(step, trainer.objects, {"rng": capture_rng({"flow": trainer.flow_rng}), "data": batcher.state()})
    finally:
        if bar is not None:
            bar.close()
        job.losses.close()
    if batcher.skipped:
        print(f"rank {ctx.rank}: skipped {batcher.skipped} sample(s), e.g. {batcher.skip_examples}", file=sys.stderr)
    model_dir = job.finish(trainer.objects, MODEL_FOLDERS[config.model.preset], vae_folder(config))
    return RunSummary(first_step, step, losses, model_dir, job.seconds, trainer.wrapped)


def run(config: TrainConfig, progress: bool = True) -> int:
    """Entry point of `vividhead train` for stage-1 configs: train, then print the loss curve."""
    ctx = init_distributed()
    try:
        summary = train(config, ctx, progress=progress)
    finally:
        shutdown(ctx)
    if ctx.is_main:
        report(config, "flow-matching loss:")
        print(f"steps {summary.first_step} -> {summary.last_step} in {summary.seconds:.1f} s; "
              f"model: {summary.model_dir}")
    return 0
