"""Streaming benchmark: per-chunk latency breakdown, FPS and theoretical FLOPs per chunk.

    python benchmarks/stream_bench.py                          # tiny preset (random weights), full chunks, + FLOPs table
    python benchmarks/stream_bench.py --variant lite --random  # lite-shaped random weights (1.3B DiT, LTX VAE, wav2vec2-base)
    python benchmarks/stream_bench.py --variant pro --random --dit-step   # one 1.3B DiT step only (CPU-friendly)
    python benchmarks/stream_bench.py --variant lite --weights DIR --wav2vec DIR   # released or trained weights
    python benchmarks/stream_bench.py --sessions 1 2 4        # concurrent sessions sharing the model (batched)

Also prints the first-frame latency under both chunking modes (`--first-chunk new`, the release's streaming
mode, and `full`, a 33-frame first chunk): the audio the first chunk waits for plus its generation time.

Stages per chunk: audio encode (8 s window + audio projection), DiT steps, VAE decode, motion re-encode and
output encode (H.264 fMP4, the server's path). FPS = emitted frames / (generation + output encode) time.
The timing is `vividhead.evaluation.fps.time_engine`, the function `vividhead eval` reports FPS with, so both
give the same figure: the `--warmup` chunks (cold start) are printed but left out of it.
FLOPs are counted with torch's FlopCounterMode on the meta device (no weights, no compute).

`--sessions N [N ...]` runs N concurrent sessions the way the server does: each generates in its own thread
through one `Batcher` (inference/batcher.py: the sessions' DiT and VAE calls run batched) and encodes its
fMP4 segments on its own encoder thread beside generation. It prints aggregate FPS (all sessions' frames /
wall time), per-session chunk latency, the encode cost per frame, and the share of time outside the DiT and
VAE: per chunk, 1 - (DiT + VAE decode + motion encode) / chunk latency; and over the run, 1 - that sum /
(sessions x wall time), which also counts what the encoder threads take from generation.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from vividhead.evaluation.fps import STAGES, ChunkTiming, EngineTiming, time_engine, timing_audio  # noqa: E402
from vividhead.inference.batcher import Batcher  # noqa: E402
from vividhead.inference.engine import Chunk, EngineOptions, FlashHeadEngine, choose_device  # noqa: E402
from vividhead.inference.sinks import FragmentEncoder, ThreadedSink  # noqa: E402
from vividhead.models.audio_features import LogMelEncoder, Wav2Vec2Encoder  # noqa: E402
from vividhead.models.flashhead import GEOMETRY, FlashHeadDiT  # noqa: E402
from vividhead.models.vae import DiffusersVideoCodec, SpaceToDepthCodec  # noqa: E402

def human(flops: float) -> str:
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if flops >= scale:
            return f"{flops / scale:.2f} {unit}"
    return f"{flops:.0f} FLOP"


def meta_config(variant: str):
    """The config of a preset's model (built on the meta device: no weights)."""
    with torch.device("meta"):
        return FlashHeadDiT.for_preset(variant).config


def latent_shape(variant: str) -> tuple[int, int, int, int]:
    """(C, F, h, w) of one 33-frame 512x512 chunk."""
    cfg, g = meta_config(variant), GEOMETRY[variant]
    return cfg.out_dim, g.latent_frames, g.size // cfg.vae_stride[1], g.size // cfg.vae_stride[2]


def count_flops(variant: str, steps: int) -> dict[str, float]:
    """Theoretical FLOPs of one chunk on the meta device: DiT (all steps), VAE decode and motion re-encode."""
    g = GEOMETRY[variant]
    c, f, h, w = latent_shape(variant)
    out: dict[str, float] = {}
    with torch.device("meta"):
        model = FlashHeadDiT.for_preset(variant)
        cfg = model.config
        x = torch.empty(1, c, f, h, w)
        windows = torch.empty(1, g.frames, 5, cfg.audio_layers, cfg.audio_dim)
        with FlopCounterMode(display=False) as counter:
            model(x, torch.full((1,), 500.0), x, windows)
        out["dit_step"] = counter.get_total_flops()
        out["dit"] = out["dit_step"] * steps
        if variant != "tiny":
            vae = _random_vae(variant)
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                vae.decode(x)
            out["vae_decode"] = counter.get_total_flops()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                vae.encode(torch.empty(1, 3, g.motion_frames, g.size, g.size))
            out["motion_encode"] = counter.get_total_flops()
    out["tokens"] = f * h * w // (cfg.patch_size[1] * cfg.patch_size[2])
    out["params"] = sum(p.numel() for p in model.parameters())
    return out


def _random_vae(variant: str) -> torch.nn.Module:
    from diffusers import AutoencoderKLLTXVideo, AutoencoderKLWan

    return (AutoencoderKLLTXVideo() if variant == "lite" else AutoencoderKLWan()).eval()


def random_engine(variant: str, device: torch.device, options: EngineOptions) -> FlashHeadEngine:
    """An engine with random weights at the real shapes of `variant` (tiny: the CPU preset)."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    model = FlashHeadDiT.for_preset(variant).to(device, dtype).eval()
    cfg = model.config
    if variant == "tiny":
        codec, audio = SpaceToDepthCodec(**{k: v for k, v in (cfg.codec or {}).items() if k != "type"}), LogMelEncoder()
    else:
        vae = _random_vae(variant).to(device, dtype)
        c = cfg.out_dim
        codec = DiffusersVideoCodec(vae, torch.zeros(c), torch.ones(c), GEOMETRY[variant].temporal_stride,
                                    sample_posterior=variant == "lite")
        audio = _random_wav2vec(device)
    return FlashHeadEngine(model, codec, audio, GEOMETRY[variant], device, options)


def _random_wav2vec(device: torch.device) -> Wav2Vec2Encoder:
    """wav2vec2-base shapes with random weights, through the same encoder class as real weights."""
    import tempfile

    from transformers import Wav2Vec2Config, Wav2Vec2Model

    folder = Path(tempfile.mkdtemp(prefix="w2v-random-"))
    Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(folder)
    return Wav2Vec2Encoder(folder, device=str(device))


def time_dit_step(engine: FlashHeadEngine) -> float:
    """Seconds for one DiT forward over a chunk."""
    c, f, h, w = latent_shape_from(engine)
    dtype = engine.model.patch_embedding.weight.dtype
    x = torch.randn(1, c, f, h, w, device=engine.device, dtype=dtype)
    cfg = engine.model.config
    windows = torch.randn(1, engine.geometry.frames, 5, cfg.audio_layers, cfg.audio_dim, device=engine.device, dtype=dtype)
    with torch.inference_mode():
        context = engine.model.audio_context(windows)
        _sync(engine.device)
        start = time.perf_counter()
        engine.denoiser(x, torch.full((1,), 500.0, device=engine.device), x, context=context)
        _sync(engine.device)
    return time.perf_counter() - start


def latent_shape_from(engine: FlashHeadEngine) -> tuple[int, int, int, int]:
    cfg, g = engine.model.config, engine.geometry
    return cfg.out_dim, g.latent_frames, g.size // cfg.vae_stride[1], g.size // cfg.vae_stride[2]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_chunks(engine: FlashHeadEngine, chunks: int, warmup: int = 1) -> EngineTiming:
    """Time `chunks` chunks after `warmup` with `time_engine` (the figure `vividhead eval` reports), printing each."""
    print(f"{'chunk':>5} {'frames':>6} " + " ".join(f"{s:>14}" for s in STAGES) + f" {'total ms':>9} {'FPS':>6}")

    def show(chunk: ChunkTiming) -> None:
        print(f"{chunk.index:>5} {chunk.frames:>6} " + " ".join(f"{chunk.stage_s.get(s, 0) * 1000:>14.1f}" for s in STAGES)
              + f" {chunk.total_s * 1000:>9.1f} {chunk.frames / chunk.total_s:>6.1f}" + ("  (warm-up)" if chunk.warmup else ""))

    timing = time_engine(engine, chunks=chunks, warmup=warmup, on_chunk=show)
    g = engine.geometry
    print(f"FPS over {timing.chunks} timed chunks ({timing.warmup_chunks} warm-up excluded): {timing.fps:.2f}; "
          f"first chunk (cold start) {timing.first_chunk_s:.3f} s; chunk latency mean {timing.chunk_latency_mean_s * 1000:.0f} ms, "
          f"max {timing.chunk_latency_max_s * 1000:.0f} ms (real-time budget {g.chunk_seconds * 1000:.0f} ms per "
          f"{g.new_frames} frames)")
    return timing


MODEL_STAGES = ("dit", "vae_decode", "motion_encode")


class _FragmentSink:
    """The server's output path as a sink: each chunk becomes an H.264 fMP4 segment."""

    def __init__(self, engine: FlashHeadEngine) -> None:
        self.encoder = FragmentEncoder(engine.geometry.size, engine.geometry.fps)

    def write(self, chunk: Chunk) -> None:
        self.encoder.encode(chunk.frames)

    def close(self) -> None:
        pass


def _session_run(engine, batcher: Batcher, reference, seed: int, chunks: int, out: list[Chunk]) -> None:
    """One session as the server runs it: generation in this thread (batched), encoding on a ThreadedSink."""
    g = engine.geometry
    session = engine.session(reference, seed=seed)
    session.feed(timing_audio((engine.first_chunk_frames + (chunks - 1) * g.new_frames) / g.fps))
    writer = ThreadedSink(_FragmentSink(engine), on_written=out.append)
    stream = session.chunks(flush=True)
    while True:
        with batcher.generating():
            chunk = next(stream, None)
        if chunk is None:
            break
        chunk.timings["latency"] = session.stats.chunk_latency[-1]
        writer.write(chunk)
    writer.close()


def run_sessions(engine: FlashHeadEngine, sessions: int, chunks: int) -> dict[str, float]:
    """`sessions` concurrent sessions of `chunks` chunks each (after a warm-up round); their figures."""
    batcher = Batcher()
    shared = batcher.engine(engine)
    reference = engine.reference(np.full((engine.geometry.size, engine.geometry.size, 3), 128, np.uint8))

    def round_of(n_chunks: int) -> tuple[float, list[list[Chunk]]]:
        done: list[list[Chunk]] = [[] for _ in range(sessions)]
        threads = [threading.Thread(target=_session_run, args=(shared, batcher, reference, i, n_chunks, done[i]))
                   for i in range(sessions)]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, done

    round_of(1)                                                  # warm-up: allocation, first batched shapes
    batcher.stats.calls.clear(), batcher.stats.rows.clear()
    wall, done = round_of(chunks)
    batcher.close()
    every = [c for session in done for c in session]
    frames = sum(len(c.frames) for c in every)
    latency = np.array([c.timings["latency"] for c in every])
    model = np.array([sum(c.timings.get(s, 0.0) for s in MODEL_STAGES) for c in every])
    encode = sum(c.timings["output_encode"] for c in every)
    audio = np.array([c.timings.get("audio_encode", 0.0) for c in every])
    return {"sessions": sessions, "fps": frames / wall, "wall_s": wall, "frames": frames,
            "audio_share": float(np.mean(audio / latency)),
            "latency_mean_ms": 1000 * float(latency.mean()), "latency_max_ms": 1000 * float(latency.max()),
            "outside_chunk_mean": float(np.mean(1 - model / latency)), "outside_chunk_max": float(np.max(1 - model / latency)),
            "outside_run": 1 - float(model.sum()) / (sessions * wall), "encode_ms_per_frame": 1000 * encode / frames,
            "dit_batch": batcher.stats.mean_batch("dit"), "vae_batch": batcher.stats.mean_batch("vae_decode"),
            **{f"{s}_ms": 1000 * float(np.mean([c.timings.get(s, 0.0) for c in every])) for s in STAGES if s != "output_encode"}}


def print_sessions(engine: FlashHeadEngine, counts: list[int], chunks: int) -> None:
    print(f"\nconcurrent sessions, {chunks} chunks each (after a warm-up round), batched DiT/VAE, encoding beside generation:")
    print(f"{'sessions':>8} {'agg FPS':>8} {'lat mean':>9} {'lat max':>8} {'DiT batch':>9} {'encode':>12} "
          f"{'outside DiT+VAE per chunk (audio enc.)':>40} {'over the run':>13}   stage means (ms)")
    for n in counts:
        r = run_sessions(engine, n, chunks)
        stages = ", ".join(f"{s} {r[s + '_ms']:.0f}" for s in STAGES if s != "output_encode")
        print(f"{n:>8} {r['fps']:>8.1f} {r['latency_mean_ms']:>7.0f}ms {r['latency_max_ms']:>6.0f}ms {r['dit_batch']:>9.2f} "
              f"{r['encode_ms_per_frame']:>6.2f}ms/fr {100 * r['outside_chunk_mean']:>12.1f}% (max {100 * r['outside_chunk_max']:4.1f}%, "
              f"{100 * r['audio_share']:4.1f}%) "
              f"{100 * r['outside_run']:>12.1f}%   {stages}", flush=True)


def first_frame_latency(engine: FlashHeadEngine, reference, mode: str) -> tuple[float, float]:
    """(seconds of audio the first chunk waits for, seconds to generate it) under a chunking mode.

    The first frame reaches a live listener after both: the audio has to be spoken before the chunk
    can start. The second chunk is generated first (untimed) so the figure is a warm one."""
    timed = FlashHeadEngine(engine.model, engine.codec, engine.audio, engine.geometry, engine.device,
                            replace(engine.options, first_chunk=mode))
    frames = timed.first_chunk_frames
    audio = timing_audio(frames / timed.geometry.fps)
    for _ in range(2):                                              # warm-up, then the timed one
        state = timed.new_state(reference)
        _sync(timed.device)
        start = time.perf_counter()
        timed.step(state, audio)
        _sync(timed.device)
        compute = time.perf_counter() - start
    return frames / timed.geometry.fps, compute


def print_first_frame_latency(engine: FlashHeadEngine) -> None:
    reference = engine.reference(np.full((engine.geometry.size, engine.geometry.size, 3), 128, np.uint8))
    print("first-frame latency = audio the first chunk waits for + its generation (warm):")
    for mode, name in (("new", "release streaming (every chunk takes the new frames)"), ("full", "33-frame first chunk")):
        wait, compute = first_frame_latency(engine, reference, mode)
        print(f"  {mode:>4} ({name}): {wait:.2f} s of audio + {compute:.3f} s = {wait + compute:.3f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", choices=("tiny", "lite", "pro"), default="tiny")
    parser.add_argument("--weights", type=Path, help="release or checkpoint folder (default: random weights)")
    parser.add_argument("--wav2vec", type=Path)
    parser.add_argument("--random", action="store_true", help="random weights at the variant's real shapes")
    parser.add_argument("--dit-step", action="store_true", help="time one DiT step only (1.3B on CPU)")
    parser.add_argument("--chunks", type=int, default=4, help="timed chunks (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="chunks streamed first and left out of the FPS figure")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--first-chunk", choices=("new", "full"), default="new", help="chunking of the timed run")
    parser.add_argument("--device")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--sessions", type=int, nargs="+", metavar="N",
                        help="concurrent sessions sharing the model, e.g. 1 2 4 (skips the single-session table)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"theoretical FLOPs per chunk ({args.steps} steps; counted on the meta device):")
    for variant in ("tiny", "lite", "pro"):
        flops = count_flops(variant, args.steps)
        extra = "".join(f", {k.replace('_', ' ')} {human(flops[k])}" for k in ("vae_decode", "motion_encode") if k in flops)
        print(f"  {variant:>4}: {flops['params'] / 1e6:.1f} M params, {flops['tokens']} tokens, "
              f"DiT {human(flops['dit_step'])}/step x {args.steps} = {human(flops['dit'])}{extra}")

    device = choose_device(args.device)
    options = EngineOptions(steps=args.steps, compile=args.compile, first_chunk=args.first_chunk)
    if args.weights:
        engine = FlashHeadEngine.load(args.weights, args.variant, device=args.device, wav2vec=args.wav2vec, options=options)
    elif args.variant == "tiny" or args.random:
        engine = random_engine(args.variant, device, options)
    else:
        print("lite/pro need --weights DIR or --random", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"\n{args.variant} on {device} ({name}), {args.steps} steps, weights: {args.weights or 'random'}")
    if args.dit_step:
        time_dit_step(engine)                          # warm-up
        print(f"one DiT step: {time_dit_step(engine) * 1000:.0f} ms")
        return 0
    if args.sessions:
        print_sessions(engine, args.sessions, args.chunks)
        return 0
    run_chunks(engine, args.chunks, args.warmup)
    print_first_frame_latency(engine)
    return 0


if __name__ == "__main__":
    sys.exit(main())
