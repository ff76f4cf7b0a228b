"""`vividhead build`: curate raw talking videos into 512x512 25 fps WebDataset shards and a Parquet manifest."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from vividhead.buildlock import BuildLock, LockHeld
from vividhead.configfile import ConfigError, load_yaml_model
from vividhead.envfail import check_out_dir, check_ray_address, stop_on_signals
from vividhead.storage import ObjectPath, check_reachable, is_object_url, location
from vividhead.weights import MODELS
from vividhead.weights_verify import verify_present

LOCKED_EXIT = 75                                       # EX_TEMPFAIL: another build holds --out; try later
HELP = "curate talking-head videos into 512x512 25 fps WebDataset shards with a Parquet manifest (on Ray)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", type=Path,
                        help="sources.yaml: files, globs, directories, http(s) URLs, s3:// or gs:// objects and prefixes")
    parser.add_argument("--out", help="output directory or bucket prefix (s3://bucket/out); re-running over it "
                                      "resumes the build")
    parser.add_argument("--config", type=Path, help="build config YAML; unset fields keep their defaults")
    parser.add_argument("--print-config", action="store_true", help="print the full build config and exit")
    parser.add_argument("--check-weights", action="store_true",
                        help="say which model stages run with weights, their embedded default, or are skipped")
    parser.add_argument("--address", default=os.environ.get("RAY_ADDRESS") or None,
                        help="join a running Ray cluster (e.g. auto or HOST:6379) instead of starting a local Ray "
                             "(default: the RAY_ADDRESS environment variable, as Ray itself reads it)")
    parser.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    parser.add_argument("--demo", action="store_true",
                        help="generate the built-in demo corpus into OUT/demo-sources and build it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--wait", action="store_true",
                        help="when another build holds --out, wait for it to end instead of refusing")


def run(args: argparse.Namespace) -> int:
    """The command; SIGINT or SIGTERM at any moment of it stops it with one line (exit 130 / 143): what is
    committed is kept, and a second signal during the seconds of teardown ends it at once."""
    with stop_on_signals(_resume_hint(args.out), "vividhead build"):
        return _run(args)


def _resume_hint(out: str | None) -> str:
    if not out:
        return "nothing was written"
    where = out if is_object_url(out) else Path(out).resolve()
    return f"what is committed is kept: run the same command again to resume {where}"


def _run(args: argparse.Namespace) -> int:
    # CLI boundary: the pipeline (Ray, the stage models) loads only when `build` runs, so `vividhead --help`
    # and the other commands start fast.
    from vividhead.pipelines.config import load_build_config, resolve_weights

    try:
        config = load_build_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.check_weights:
        return _check_weights(config)
    if args.out is None or (args.sources is None and not args.demo):
        print("error: give --out DIR and either --sources sources.yaml or --demo", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print(f"error: --workers must be >= 1, got {args.workers}", file=sys.stderr)
        return 2
    errors = _weight_errors(config, resolve_weights(config))   # before any worker starts
    if errors:
        print("\n".join(f"error: {e}" for e in errors), file=sys.stderr)
        return 2
    args.out = location(args.out, config.storage)
    if isinstance(args.out, ObjectPath):
        if args.demo:
            print("error: --demo writes its corpus next to the output: give a local --out", file=sys.stderr)
            return 2
        check_reachable(args.out, "--out")
    else:
        check_out_dir(args.out)
    check_ray_address(args.address)
    try:
        with BuildLock(args.out, wait=args.wait):
            return _build(args, config)
    except LockHeld as err:
        print(f"error: {err}", file=sys.stderr)
        return LOCKED_EXIT


def _build(args: argparse.Namespace, config: Any) -> int:
    """The build itself, run while holding the lock of --out."""
    from vividhead.pipelines.build import run_build  # CLI boundary, as in `run`
    from vividhead.pipelines.config import SourcesFile

    sources_path = args.sources
    if args.demo:
        from vividhead.demo import make_demo_corpus  # scipy's signal tools: only the demo needs them

        print(f"generating the demo corpus in {args.out / 'demo-sources'} ...", file=sys.stderr)
        sources_path = make_demo_corpus(args.out / "demo-sources")
    try:
        sources = load_yaml_model(SourcesFile, sources_path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for entry in sources.sources:                      # a bucket that cannot be read: one line, before any decode
        if entry.path is not None and is_object_url(entry.path):
            check_reachable(location(entry.path, config.storage), "source")
    summary = run_build(sources, Path(sources_path).resolve().parent, args.out, config, args.address, args.workers,
                        progress=not args.no_progress)
    _report(args.out, summary)
    return 0


def _check_weights(config: Any) -> int:
    from vividhead.pipelines import stages  # CLI boundary, as in `run`
    from vividhead.pipelines.config import resolve_weights

    weights = resolve_weights(config)
    scrfd = weights.available("scrfd")
    face = "weights (SCRFD " + str(scrfd) + ")" if scrfd and config.face.detector != "mediapipe" else "default (mediapipe)"
    print(f"face        {face}")
    for stage in stages.clip_stages(config):
        mode = stages.mode(stage, config, weights)
        print(f"{stage.name:<11} {mode:<8} {_stage_reason(stage, config, weights)}".rstrip())
    errors = _weight_errors(config, weights)
    for name in weights.model_fields:
        path = getattr(weights, name)
        state = "present" if weights.available(name) else "missing" if path else "not configured"
        print(f"  weights.{name:<12} {state:<15} {path or ''}")
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


def _weight_errors(config: Any, weights: Any) -> list[str]:
    """One line per weight the build's stages will load that is not what its stage expects (lock record,
    shape): checked here, before any worker starts."""
    from vividhead.pipelines import stages  # CLI boundary, as in `run`

    used = {stage.name for stage in stages.clip_stages(config)} | (
        {"face"} if config.face.detector != "mediapipe" else set())
    return verify_present(weights, [m.name for m in MODELS.values() if m.build_stage in used])


def _stage_reason(stage: Any, config: Any, weights: Any) -> str:
    """The stage's one-line `reason()` without loading any model (empty when the stage cannot be built:
    its mode already says that error)."""
    try:
        return stage.model(config.stage_config(stage), weights).reason()
    except Exception:  # noqa: BLE001 - the mode column carries the error
        return ""


def _report(out: Path, summary: Any) -> None:
    """Print the `BuildSummary` the build computed."""
    clips = summary.clips
    print(f"shards:   {out / 'shards'} ({summary.shards} tar files)")
    print(f"manifest: {out / 'manifest.parquet'} ({summary.rows} rows)")
    print(f"kept:     {clips['kept']} clips, {summary.hours['kept']:.4f} h")
    print(f"rejected: {summary.rows - clips['kept']} rows ({clips['rejected']} rejected, "
          f"{clips['skipped']} skipped, {clips['failed']} failed), {summary.hours['rejected']:.4f} h")
    if summary.reasons:
        print("reasons:  " + ", ".join(f"{r} {n}" for r, n in summary.reasons.items()))
    resumed = f", {summary.units_resumed} units already done" if summary.units_resumed else ""
    resumed += f", {summary.units_continued} continued" if summary.units_continued else ""
    redone = f", {len(summary.units_redone)} redone" if summary.units_redone else ""
    redone += f", {summary.units_redecided} re-decided from stored metrics" if summary.units_redecided else ""
    redone += f", {len(summary.dropped)} unreadable files or rows dropped" if summary.dropped else ""
    changed = " (config changed since the last run)" if summary.config_changed else ""
    print(f"this run: {summary.units} units{resumed}{redone}, {summary.seconds:.1f} s{changed}")
