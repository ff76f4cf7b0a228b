"""`vividhead stream`: real-time talking-head video from one image and speech, to a file, a pipe or a browser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "stream a talking head from a reference image and audio (MP4 file, raw frames to a pipe, or a local web server)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True,
                        help="release folder (Model_Lite/, Model_Pro/, VAE_LTX/, VAE_Wan/) or a `vividhead train` checkpoint folder")
    parser.add_argument("--variant", choices=("lite", "pro", "tiny"), default="lite")
    parser.add_argument("--image", type=Path, required=True, help="reference image (the face to animate)")
    parser.add_argument("--audio", type=Path, help="driving speech (any format ffmpeg reads); not needed with --serve")
    parser.add_argument("--out", help="output MP4 path, or '-' for raw rgb24 frames on stdout")
    parser.add_argument("--serve", action="store_true", help="run the local WebSocket server and browser page")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default: local only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--stats", action="store_true", help="print per-chunk latency, first-frame latency and FPS")
    parser.add_argument("--no-crop", dest="crop", action="store_false", help="use the image as is (centre square), no face crop")
    parser.add_argument("--color-correction", action="store_true", help="match each chunk's colours to the reference")
    parser.add_argument("--wav2vec", type=Path, help="local wav2vec2-base-960h folder (lite/pro); default: log-mel features")
    parser.add_argument("--vae", type=Path, help="VAE folder/file when it is not next to the model folder")
    parser.add_argument("--steps", type=int, default=4, choices=(1, 2, 4, 8), help="sampler steps (distilled: 4 or 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when present)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT (GPU)")
    parser.add_argument("--sequence-parallel", action="store_true",
                        help="under torchrun: split the DiT's tokens across GPUs with xDiT (pip install vividhead[xdit])")


def run(args: argparse.Namespace) -> int:
    from vividhead.inference.engine import EngineOptions, FlashHeadEngine
    from vividhead.inference.reference import load_rgb

    if args.serve and args.sequence_parallel:
        print("vividhead stream: --serve runs on one GPU; --sequence-parallel is for --out", file=sys.stderr)
        return 2
    if not args.serve and not (args.audio and args.out):
        print("vividhead stream: give --audio and --out (a .mp4 path or '-'), or --serve", file=sys.stderr)
        return 2
    try:
        options = EngineOptions(steps=args.steps, color_correction=args.color_correction, crop=args.crop,
                                compile=args.compile, seed=args.seed, sequence_parallel=args.sequence_parallel)
        engine = FlashHeadEngine.load(args.weights, args.variant, device=args.device, wav2vec=args.wav2vec,
                                      vae=args.vae, options=options)
        reference = engine.reference(load_rgb(args.image))
    except (FileNotFoundError, ValueError) as err:
        print(f"vividhead stream: {err}", file=sys.stderr)
        return 2
    if args.serve:
        from vividhead.inference.server import ServerLimits, serve

        serve(engine, reference, host=args.host, port=args.port, limits=ServerLimits())
        return 0
    return _stream_file(engine, reference, args)


def _stream_file(engine, reference, args: argparse.Namespace) -> int:
    from vividhead.inference.sinks import Mp4Sink, NullSink, RawSink, stream_to_sink
    from vividhead.models.audio_features import load_audio

    try:
        audio = load_audio(args.audio)
    except (FileNotFoundError, ValueError) as err:
        print(f"vividhead stream: {err}", file=sys.stderr)
        return 2
    g = engine.geometry
    if not engine.is_main:
        sink = NullSink()                      # sequence-parallel helper rank: same stream, no output
    elif args.out == "-":
        sink = RawSink(size=g.size, fps=g.fps)
    else:
        sink = Mp4Sink(Path(args.out), size=g.size, fps=g.fps)
    session = engine.session(reference)
    if args.stats and engine.is_main:
        crop = reference.face_box
        print("vividhead stream: reference " + (f"face crop x={crop[0]} y={crop[1]} side={crop[2]}" if crop else
              "centre square (no face crop)"), file=sys.stderr)
        print(f"vividhead stream: {args.variant} on {engine.device}, chunks of {g.frames} frames "
              f"(then {g.new_frames} new), {engine.options.steps} steps", file=sys.stderr)
    def report(chunk) -> None:
        stages = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in chunk.timings.items())
        print(f"chunk {chunk.index}: {len(chunk.frames)} frames in {session.stats.chunk_latency[-1] * 1000:.0f} ms "
              f"({stages} ms)", file=sys.stderr, flush=True)

    show = args.stats and engine.is_main
    stream_to_sink(session, audio, sink, piece_seconds=g.chunk_seconds, on_chunk=report if show else None)
    if show:
        print(json.dumps(session.stats.summary()), file=sys.stderr)
    return 0
