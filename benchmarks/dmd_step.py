"""Time and peak memory of one stage-2 DMD iteration cycle (1 generator + N fake-score updates).

    python benchmarks/dmd_step.py --preset lite                       # GPU: 1.3B DiT, bf16 autocast
    python benchmarks/dmd_step.py --preset lite --vae W/VAE_LTX       # with the real motion re-encode
    python benchmarks/dmd_step.py --preset tiny                       # CPU smoke run

Three randomly initialised DiTs of the preset (weights do not change the cost) on a synthetic
K-chunk latent batch of the preset's 512x512 geometry, run through `DistillTrainer.step`. Without
`--vae` the motion latents of the next chunk are the chunk's last latent frames, and the VAE
decode/encode that streaming does is NOT in the figure (the script says so).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT
from vividhead.training.dmd import ChunkBatch
from vividhead.training.dmd_config import DistillConfig
from vividhead.training.stage1 import freeze_unused
from vividhead.training.stage2 import DistillTrainer, motion_from_chunk


def synthetic_batch(cfg, preset: str, chunks: int, batch: int, device) -> ChunkBatch:
    geo = GEOMETRY[preset]
    side = geo.size // cfg.vae_stride[1] if preset != "tiny" else cfg.codec["frame_size"] // cfg.codec["spatial"]
    shape = (batch, chunks, cfg.out_dim, geo.latent_frames, side, side)
    latents = torch.randn(shape, device=device)
    reference = latents[:, 0, :, :1].expand(-1, -1, geo.latent_frames, -1, -1).contiguous()
    motion = [reference[:, :, :1]] + [latents[:, j, :, :geo.motion_latents] for j in range(1, chunks)]
    audio = torch.randn(batch, chunks, geo.frames, 2 * geo.audio_radius + 1, cfg.audio_layers, cfg.audio_dim, device=device)
    return ChunkBatch(latents, motion, reference, audio)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=("tiny", "lite", "pro"), default="lite")
    parser.add_argument("--vae", help="VAE folder (VAE_LTX / VAE_Wan) for the real motion re-encode")
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--cycles", type=int, default=3, help="timed cycles after one warm-up cycle")
    parser.add_argument("--no-checkpointing", action="store_true")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (a shared CPU: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    on_gpu = device.type == "cuda"
    models = []
    for _ in range(3):
        model = FlashHeadDiT.for_preset(args.preset).to(device)
        model.gradient_checkpointing = on_gpu and not args.no_checkpointing
        freeze_unused(model)
        models.append(model)
    cfg = models[0].config
    geo = GEOMETRY[args.preset]
    if args.vae:
        from vividhead.models.vae import load_codec

        codec = load_codec(args.preset, args.vae, cfg.codec, device=device, vae_path=args.vae,
                           dtype=torch.bfloat16 if on_gpu else torch.float32)
        motion_fn = lambda z: motion_from_chunk(codec, z, geo)  # noqa: E731
    elif args.preset == "tiny":
        from vividhead.models.vae import load_codec

        codec = load_codec("tiny", ".", cfg.codec)
        motion_fn = lambda z: motion_from_chunk(codec, z, geo)  # noqa: E731
    else:
        print("note: no --vae: motion latents = the chunk's last latent frames; the VAE re-encode is not timed")
        motion_fn = lambda z: z[:, :, -geo.motion_latents:]  # noqa: E731
    config = DistillConfig(num_chunks=args.chunks)
    trainer = DistillTrainer(config, models[0], models[1], models[2], velocity=lambda m: m, motion_fn=motion_fn)
    batch = synthetic_batch(cfg, args.preset, args.chunks, args.batch, device)
    ratio = config.fake_updates_per_generator
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu else torch.autocast("cpu", enabled=False)
    params = sum(p.numel() for p in models[0].parameters())
    print(f"{args.preset}: {params / 1e9:.3f} B parameters per network, device {torch.cuda.get_device_name() if on_gpu else 'cpu'}, "
          f"batch {args.batch}, K {args.chunks}, gradient checkpointing {models[0].gradient_checkpointing}")

    def cycle() -> dict[str, float]:
        seconds = {"generator": 0.0, "fake": 0.0}
        for _ in range(ratio):
            kind = "generator" if trainer.trains_generator(trainer.iteration) else "fake"
            if on_gpu:
                torch.cuda.synchronize()
            tick = time.perf_counter()
            with autocast:
                logs = trainer.step(batch)
            if on_gpu:
                torch.cuda.synchronize()
            seconds[kind] += time.perf_counter() - tick
            if "chunk" in logs:
                seconds["k"] = logs["chunk"]
        return seconds

    cycle()
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    for i in range(args.cycles):
        s = cycle()
        print(f"cycle {i + 1}: {s['generator'] + s['fake']:.2f} s (iteration with the G update, k={int(s['k'])}: "
              f"{s['generator']:.2f} s; {ratio - 1} fake-only iterations: {s['fake']:.2f} s)")
    if on_gpu:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
