"""`vividhead eval`: the paper's metrics (FID, FVD, Sync-C, Sync-D, FPS) on generated talking-head videos.

Either score existing videos (`--generated DIR_OR_SHARDS --reference DIR_OR_SHARDS`), or generate
them first from a checkpoint (`--checkpoint W --reference SHARDS`: each reference clip's first frame
and audio drive the stream engine). Writes eval.json and eval.md into --out and prints the table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "compute FID, FVD, Sync-C/D and FPS for generated videos against reference clips"


def _metrics(text: str) -> tuple[str, ...]:
    from vividhead.evaluation.runner import METRICS

    names = tuple(dict.fromkeys(m.strip().lower() for m in text.split(",") if m.strip()))
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown metrics {unknown}; choose from {','.join(METRICS)}")
    return names


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {value}")
    return value


class _HelpWithDefaults(argparse.ArgumentDefaultsHelpFormatter):
    """`--help` shows each option's default, except where there is none (None or an off switch)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from vividhead.evaluation.fid import FID_PROTOCOLS
    from vividhead.evaluation.fvd import DEFAULT_FVD_PROTOCOL, FVD_PROTOCOLS
    from vividhead.evaluation.sync import DEFAULT_SYNC_PROTOCOL, SYNC_PROTOCOLS

    parser.formatter_class = _HelpWithDefaults
    parser.add_argument("--generated", type=Path,
                        help="generated videos: a folder of video files, a build folder / folder of WebDataset shards, or one file")
    parser.add_argument("--reference", type=Path,
                        help="ground-truth videos (same forms); with --checkpoint, the clips that drive generation")
    parser.add_argument("--checkpoint", type=Path,
                        help="FlashHead weights: generate one video per reference clip (its first frame + its audio), then score; also times FPS")
    parser.add_argument("--metrics", type=_metrics, default="sync,fid,fvd,fps",
                        help="comma-separated subset of sync,fid,fvd,fps")
    parser.add_argument("--out", type=Path, default=Path("eval-out"), help="folder for eval.json and eval.md (and generated videos)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="weights manifest; none given: the project's manifests/weights.yaml when present")
    parser.add_argument("--inception", type=Path, help="FID Inception weights pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--i3d", type=Path, help="FVD I3D weights i3d_torchscript.pt (TorchScript)")
    parser.add_argument("--syncnet", type=Path, help="SyncNet weights syncnet_v2.model")
    parser.add_argument("--scrfd", type=Path, help="optional SCRFD face detector ONNX for Sync; none given: mediapipe")
    parser.add_argument("--sync-protocol", choices=SYNC_PROTOCOLS, default=DEFAULT_SYNC_PROTOCOL,
                        help="syncnet_python: the reference tool's input path (its 25 fps rule, JPEG crops, 16-bit audio, "
                             "face tracks > 100 frames); exact: lossless frames and audio (docs/eval.md)")
    parser.add_argument("--fvd-protocol", choices=FVD_PROTOCOLS, default=DEFAULT_FVD_PROTOCOL,
                        help="stylegan-v: one 16-frame clip per video, squashed to 224x224, covariance / N; "
                             "fvd-comparison: every clip, short side 224 + centre crop, covariance / (N-1)")
    parser.add_argument("--fvd-seed", type=int, default=0, help="stylegan-v: seed of the random clip start in each reference video")
    parser.add_argument("--fid-protocol", choices=FID_PROTOCOLS, default=FID_PROTOCOLS[0], help="FID protocol")
    parser.add_argument("--fid-frames", type=_count, default=0, help="frames per video for FID, evenly spaced (0 = every frame)")
    parser.add_argument("--fvd-clips", type=_count, default=0,
                        help="fvd-comparison: 16-frame clips per video (0 = every non-overlapping clip)")
    parser.add_argument("--max-videos", type=_count, default=0, help="use at most this many videos per set (0 = all)")
    parser.add_argument("--sync-reference", action="store_true", help="also report Sync-C/D of the reference videos")
    parser.add_argument("--fps-chunks", type=_count, default=8, help="chunks timed for FPS after warm-up")
    parser.add_argument("--variant", choices=("lite", "pro", "tiny"), default=None,
                        help="model variant of --checkpoint; none given: read from the checkpoint")
    parser.add_argument("--wav2vec", type=Path, help="local wav2vec2-base-960h folder for --checkpoint (lite/pro)")
    parser.add_argument("--steps", type=int, default=4, choices=(1, 2, 4, 8), help="sampler steps for --checkpoint")
    parser.add_argument("--device", default=None, help="torch device; none given: cuda when present, else cpu")


def _default_manifest() -> Path:
    import vividhead

    return Path(vividhead.__file__).resolve().parents[1] / "manifests" / "weights.yaml"


def _generate_and_time(args: argparse.Namespace, config):
    """Load the stream engine once: generate from the reference clips (unless --generated is given), time FPS."""
    from vividhead.evaluation.fps import fps_row, load_engine
    from vividhead.evaluation.generate import generate_from_reference
    from vividhead.evaluation.videos import list_videos

    engine = load_engine(args.checkpoint, args.variant, args.device, args.wav2vec, args.steps)
    generated = args.generated
    if generated is None and not set(config.metrics) & {"sync", "fid", "fvd"}:
        generated = []                                 # FPS only: nothing to generate
    elif generated is None:
        # Score exactly the videos of this run, even if the folder holds older ones.
        generated = generate_from_reference(engine, args.reference, args.out / "generated", max_videos=args.max_videos)
        print(f"generated {len(generated)} videos into {args.out / 'generated'}", file=sys.stderr)
    fps = None
    if "fps" in config.metrics:
        first_frame = list_videos(args.reference)[0].load().frames[0]
        fps = fps_row(engine, first_frame, chunks=max(1, args.fps_chunks))
    return generated, fps


def run(args: argparse.Namespace) -> int:
    from vividhead.evaluation.fid import FIDConfig
    from vividhead.evaluation.fvd import FVDConfig
    from vividhead.evaluation.report import format_table, write_report
    from vividhead.evaluation.runner import EvalConfig, load_weights, run_eval

    if args.checkpoint is None and args.generated is None:
        print("vividhead eval: give --generated DIR (videos to score) or --checkpoint W --reference SHARDS", file=sys.stderr)
        return 2
    if args.checkpoint is not None and args.reference is None:
        print("vividhead eval: --checkpoint needs --reference SHARDS (their first frames and audio drive generation)", file=sys.stderr)
        return 2
    config = EvalConfig(metrics=args.metrics, fid=FIDConfig(args.fid_protocol, frames_per_video=args.fid_frames),
                        fvd=FVDConfig(args.fvd_protocol, clips_per_video=args.fvd_clips, seed=args.fvd_seed),
                        sync_protocol=args.sync_protocol, max_videos=args.max_videos,
                        sync_reference=args.sync_reference, device=args.device)
    try:
        weights = load_weights(args.weights or _default_manifest(),
                               {"inception": args.inception, "i3d": args.i3d, "syncnet": args.syncnet, "scrfd": args.scrfd})
        generated, fps = args.generated, None
        if args.checkpoint is not None:
            generated, fps = _generate_and_time(args, config)
        report = run_eval(generated, args.reference, weights, config, fps)
    except (FileNotFoundError, ValueError) as error:
        print(f"vividhead eval: {error}", file=sys.stderr)
        return 2
    json_path, table_path = write_report(report, args.out)
    if all(row.status == "unavailable" for row in report.rows):
        print(f"vividhead eval: no metric could be computed ({_reasons(report.rows)}); wrote {json_path}",
              file=sys.stderr)
        return 2
    print(format_table(report), end="")
    print(f"\nwrote {json_path} and {table_path}")
    return 0


def _reasons(rows) -> str:
    """`FID: reason; Sync-C, Sync-D, AV offset: reason` - metrics that share a reason named together."""
    by_reason: dict[str, list[str]] = {}
    for row in rows:
        by_reason.setdefault(row.reason or "?", []).append(row.metric)
    return "; ".join(f"{', '.join(metrics)}: {reason}" for reason, metrics in by_reason.items())
