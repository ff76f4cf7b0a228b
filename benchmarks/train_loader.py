"""Is the data loader the bottleneck of stage-1 training? Loader samples/s against training steps/s.

Measures, on this machine:
  1. the shard stream alone (decode mp4 window + reference, resize, audio rows) with 0..N workers;
  2. the training step alone (tiny preset: latents, flow-matching loss, backward, AdamW) on a
     pre-loaded batch, so no data wait is counted;
  3. the samples/s training consumes = steps/s x batch size, next to what the loader delivers.

    .venv/bin/python benchmarks/train_loader.py --shards demo-out/shards --config manifests/train-tiny.yaml
    .venv/bin/python benchmarks/train_loader.py --synthetic 6      # real-format synthetic shards
On a GPU machine add `--preset lite --vae PATH/VAE_LTX` to time a lite step instead (bf16 autocast).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def loader_rate(shards: list[Path], workers: int, size: int, samples: int) -> float:
    from vividhead.training.dataset import ShardDataset, sample_stream

    dataset = ShardDataset(shards, frames=33, buckets=[(size, size)], seed=0)
    stream = sample_stream(dataset, workers)
    next(stream)                                             # start-up (worker fork, first decode) not counted
    start = time.perf_counter()
    for _ in itertools.islice(stream, samples):
        pass
    return samples / (time.perf_counter() - start)


def step_rate(shards: list[Path], preset: str, batch: int, size: int, steps: int, vae: Path | None,
              shape: dict[str, int]) -> tuple[float, str]:
    from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT
    from vividhead.models.vae import load_codec
    from vividhead.training.dataset import AUDIO_LEFT_CONTEXT, ShardDataset
    from vividhead.training.distributed import choose_device
    from vividhead.training.flow_matching import flow_matching_loss
    from vividhead.training.stage1 import freeze_unused, peek_audio_shape, to_latents

    device = choose_device()
    layers, dim = peek_audio_shape(shards)
    overrides = dict(shape) | ({"audio_layers": layers, "audio_dim": dim} if preset == "tiny" else {})
    model = FlashHeadDiT.for_preset(preset, **overrides).to(device).train()
    model.gradient_checkpointing = device.type == "cuda"
    freeze_unused(model)
    codec = load_codec(preset, vae or Path("."), model.config.codec, device=device, vae_path=vae)
    dataset = ShardDataset(shards, frames=33, buckets=[(size, size)], seed=0)
    samples = [dataset.sample(j) for j in range(batch)]
    batch_latents = to_latents(samples, codec, None, device, GEOMETRY[preset].motion_latents)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)

    def one_step() -> None:
        with autocast:
            loss = flow_matching_loss(model, batch_latents, shift=5.0, audio_drop_prob=0.1,
                                      generator=generator, left_context=AUDIO_LEFT_CONTEXT)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    return steps / (time.perf_counter() - start), name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", nargs="+", help="shard files, folders or globs")
    parser.add_argument("--synthetic", type=int, default=0, help="write N synthetic real-format clips instead")
    parser.add_argument("--config", type=Path, help="take preset, model.overrides and batch size from a train config")
    parser.add_argument("--preset", default="tiny", choices=("tiny", "lite", "pro"))
    parser.add_argument("--vae", type=Path, help="VAE folder for lite/pro")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--max-workers", type=int, default=max(1, (os.cpu_count() or 2)))
    args = parser.parse_args()

    from vividhead.training.config import expand_shards, load_train_config

    shape: dict[str, int] = {}
    if args.config is not None:
        config = load_train_config(args.config)
        args.preset, args.batch, shape = config.model.preset, config.optim.batch_size, dict(config.model.overrides)

    tmp = None
    if args.synthetic:
        sys.path.insert(0, str(REPO / "tests"))
        from train_fixtures import write_shards

        tmp = tempfile.TemporaryDirectory()
        shards = write_shards(Path(tmp.name), [args.synthetic], n_frames=125)   # 5 s clips, 512x512
        print(f"synthetic shards: {args.synthetic} clips of 125 frames (5 s), 512x512 H.264")
    elif args.shards:
        shards = expand_shards(args.shards)
    else:
        parser.error("give --shards or --synthetic N")
    size = {"tiny": 32}.get(args.preset, 512)
    print(f"machine: {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}, torch {torch.__version__}, "
          f"cuda={torch.cuda.is_available()}")
    print(f"\nloader (33-frame window + reference decoded from 512x512 mp4, resized to {size}):")
    rates = {}
    for workers in range(0, args.max_workers + 1):
        rates[workers] = loader_rate(shards, workers, size, args.samples)
        print(f"  workers={workers}: {rates[workers]:7.2f} samples/s")
    best_workers = max(rates, key=rates.get)
    if not torch.cuda.is_available():   # as `vividhead train` does: the loader workers keep their cores
        torch.set_num_threads(max(1, (os.cpu_count() or 1) - best_workers))
    steps, device = step_rate(shards, args.preset, args.batch, size, args.steps, args.vae, shape)
    need = steps * args.batch
    best = max(rates.values())
    print(f"\ntraining step ({args.preset} {shape or ''}, batch {args.batch}, {device}): {steps:.2f} steps/s "
          f"= {need:.2f} samples/s consumed")
    print(f"loader / consumption at its best worker count: {best / need:.2f}x "
          f"({'the loader keeps up' if best >= need else 'the LOADER is the bottleneck'})")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
