"""`vividhead stream`: real-time talking-head video from one image and speech, to a file, a pipe or a browser."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vividhead.envfail import InputError

HELP = "stream a talking head from a reference image and audio (MP4 file, raw frames to a pipe, or a local web server)"
# Loading weights, the image and the audio reports a missing or unusable file (naming it) as these.
INPUT_ERRORS = (FileNotFoundError, ValueError)
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weights", type=Path, required=True,
                        help="release folder (Model_Lite/, Model_Pro/, VAE_LTX/, VAE_Wan/) or a `vividhead train` checkpoint folder")
    parser.add_argument("--variant", choices=("lite", "pro", "tiny"), default="lite")
    parser.add_argument("--image", type=Path, required=True, help="reference image (the face to animate)")
    parser.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS, metavar="N",
                        help="refuse a reference image of more pixels, read from its header before decoding "
                             f"(default {DEFAULT_MAX_IMAGE_PIXELS:,})")
    parser.add_argument("--audio", type=Path, help="driving speech (any format ffmpeg reads); not needed with --serve")
    parser.add_argument("--out", help="output MP4 path, or '-' for raw rgb24 frames on stdout")
    parser.add_argument("--serve", action="store_true", help="run the local WebSocket server and browser page")
    parser.add_argument("--host", default="127.0.0.1",
                        help="server address (default: local only; any other address requires a token)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="also accept WebSocket connections from pages of this origin (e.g. https://app.example); "
                             "repeatable. By default only the server's own page may connect")
    parser.add_argument("--token", help="access token required off loopback (default: a random one, printed in the page URL)")
    parser.add_argument("--idle-timeout", type=float, default=30.0, metavar="SECONDS",
                        help="close a session that sends no audio for this long (default 30)")
    parser.add_argument("--min-audio-rate", type=float, default=4000.0, metavar="BYTES_PER_SECOND",
                        help="close a session that sends audio slower than this on average, once it is "
                             "--idle-timeout seconds behind (default 4000; live s16 PCM is 32000)")
    parser.add_argument("--max-sessions", type=int, default=4, help="concurrent sessions (default 4)")
    parser.add_argument("--stats", action="store_true", help="print per-chunk latency, first-frame latency and FPS")
    parser.add_argument("--face-crop", dest="crop", action="store_true", default=False,
                        help="crop the reference to the face like the build does (default: the whole image, as released)")
    parser.add_argument("--no-crop", dest="crop", action="store_false", help="the whole image, resized and centre-cropped (default)")
    parser.add_argument("--color-correction", type=float, default=1.0, metavar="STRENGTH",
                        help="match each frame's Lab colours to the reference, 0..1 (default 1.0, as released)")
    parser.add_argument("--no-color-correction", dest="color_correction", action="store_const", const=0.0)
    parser.add_argument("--first-chunk", choices=("new", "full"), default="new",
                        help="new: every chunk, the first too, takes the new frames' audio (24 Lite / 28 Pro), as "
                             "released; full: wait for 33 frames of audio before the first chunk")
    parser.add_argument("--wav2vec", type=Path, help="local wav2vec2-base-960h folder (lite/pro); default: log-mel features")
    parser.add_argument("--vae", type=Path, help="VAE folder/file when it is not next to the model folder")
    parser.add_argument("--steps", type=int, default=4, choices=(1, 2, 4, 8),
                        help="sampler steps (distilled: 4; 2; others use linspace(1000, 1, n) as released)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", help="cuda, cuda:1, cpu (default: CUDA when present)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT (GPU)")
    parser.add_argument("--sequence-parallel", action="store_true",
                        help="under torchrun: split the DiT's tokens across GPUs with xDiT (pip install vividhead[xdit])")


def run(args: argparse.Namespace) -> int:
    from vividhead.inference.engine import EngineOptions, FlashHeadEngine
    from vividhead.inference.reference import load_rgb

    if args.serve and args.sequence_parallel:
        raise InputError("--serve runs on one GPU; --sequence-parallel is for --out")
    if not args.serve and not (args.audio and args.out):
        raise InputError("give --audio and --out (a .mp4 path or '-'), or --serve")
    if not args.serve and args.out != "-" and Path(args.out).is_dir():
        raise InputError(f"--out {args.out} is a folder; give the path of an .mp4 file to write, or '-'")
    # Everything the user named is checked before the model loads (seconds to minutes): the image (its size
    # from the header), and for --serve the token and the address, which are bound now.
    image = load_rgb(args.image, max_pixels=args.max_image_pixels)
    if args.serve:
        from vividhead.inference.server import ServerLimits, access_policy, listen

        access = access_policy(args.host, token=args.token, allow_origins=args.allow_origin)
        limits = ServerLimits(idle_seconds=args.idle_timeout, max_sessions=args.max_sessions,
                              min_audio_bytes_per_second=args.min_audio_rate)
        sockets = listen(args.host, args.port)
    options = EngineOptions(steps=args.steps, color_correction=args.color_correction, crop=args.crop,
                            first_chunk=args.first_chunk, compile=args.compile, seed=args.seed,
                            sequence_parallel=args.sequence_parallel)
    engine = FlashHeadEngine.load(args.weights, args.variant, device=args.device, wav2vec=args.wav2vec,
                                  vae=args.vae, options=options)
    reference = engine.reference(image)
    if args.serve:
        from vividhead.inference.server import serve

        serve(engine, reference, host=args.host, port=args.port, limits=limits, access=access, sockets=sockets)
        return 0
    return _stream_file(engine, reference, args)


def _stream_file(engine, reference, args: argparse.Namespace) -> int:
    from vividhead.inference.engine import NonFiniteOutput
    from vividhead.inference.sinks import Mp4Sink, NullSink, RawSink, stream_to_sink
    from vividhead.models.audio_features import load_audio

    audio = load_audio(args.audio)
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
              "whole image, short side to 512, centre crop"), file=sys.stderr)
        print(f"vividhead stream: {args.variant} on {engine.device}, chunks of {g.frames} frames, "
              f"{engine.first_chunk_frames} new in the first, then {g.new_frames}; {engine.options.steps} steps",
              file=sys.stderr)
    def report(chunk) -> None:
        stages = ", ".join(f"{name} {seconds * 1000:.0f}" for name, seconds in chunk.timings.items())
        print(f"chunk {chunk.index}: {len(chunk.frames)} frames in {session.stats.chunk_latency[chunk.index] * 1000:.0f} ms "
              f"({stages} ms; encoding {chunk.timings['output_encode'] * 1000 / max(len(chunk.frames), 1):.1f} ms/frame, "
              f"beside generation)", file=sys.stderr, flush=True)

    show = args.stats and engine.is_main
    try:
        stream_to_sink(session, audio, sink, piece_seconds=g.chunk_seconds, on_chunk=report if show else None)
    except NonFiniteOutput as err:             # the weights are bad: no half video is left behind
        if args.out != "-":
            Path(args.out).unlink(missing_ok=True)
        raise InputError(f"{err}; no output written (check the checkpoint)") from err
    if show:
        summary = session.stats.summary()
        encode = session.stats.stages.get("output_encode", 0.0)
        summary["output_encode_ms_per_frame"] = round(encode * 1000 / max(session.stats.frames, 1), 2)
        print(json.dumps(summary), file=sys.stderr)
    return 0
