"""`vividhead build`: curate raw talking videos into 512x512 25 fps WebDataset shards and a Parquet manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vividhead.buildlock import BuildLock, LockHeld
from vividhead.envfail import check_out_dir, check_ray_address

LOCKED_EXIT = 75                                       # EX_TEMPFAIL: another build holds --out; try later
HELP = "curate talking-head videos into 512x512 25 fps WebDataset shards with a Parquet manifest (on Ray)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sources", type=Path, help="sources.yaml: files, globs, directories, http(s) URLs")
    parser.add_argument("--out", type=Path, help="output directory (re-running over it resumes the build)")
    parser.add_argument("--config", type=Path, help="build config YAML; unset fields keep their defaults")
    parser.add_argument("--print-config", action="store_true", help="print the full build config and exit")
    parser.add_argument("--check-weights", action="store_true",
                        help="say which model stages run with weights, their embedded default, or are skipped")
    parser.add_argument("--address", help="join a running Ray cluster (e.g. auto or HOST:6379) instead of a local Ray")
    parser.add_argument("--workers", type=int, help="CPUs of the local Ray (default: all of this machine's)")
    parser.add_argument("--demo", action="store_true",
                        help="generate the built-in demo corpus into OUT/demo-sources and build it")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--wait", action="store_true",
                        help="when another build holds --out, wait for it to end instead of refusing")


def run(args: argparse.Namespace) -> int:
    import yaml

    from vividhead.config import load_build_config, resolve_weights
    from vividhead.configfile import ConfigError

    try:
        config = load_build_config(args.config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False), end="")
        return 0
    if args.check_weights:
        return _check_weights(config, resolve_weights)
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
    check_out_dir(args.out)
    check_ray_address(args.address)
    try:
        with BuildLock(args.out, wait=args.wait):
            return _build(args, config)
    except LockHeld as err:
        print(f"error: {err}", file=sys.stderr)
        return LOCKED_EXIT


def _build(args: argparse.Namespace, config) -> int:
    """The build itself, run while holding the lock of --out."""
    from vividhead.config import SourcesFile
    from vividhead.configfile import ConfigError, load_yaml_model

    sources_path = args.sources
    if args.demo:
        from vividhead.demo import make_demo_corpus

        print(f"generating the demo corpus in {args.out / 'demo-sources'} ...", file=sys.stderr)
        sources_path = make_demo_corpus(args.out / "demo-sources")
    try:
        sources = load_yaml_model(SourcesFile, sources_path)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from vividhead.pipelines.build import run_build

    summary = run_build(sources, Path(sources_path).resolve().parent, args.out, config, args.address, args.workers,
                        progress=not args.no_progress)
    _report(args.out, summary)
    return 0


def _check_weights(config, resolve_weights) -> int:
    from vividhead.pipelines.build import model_stages, stage_mode

    weights = resolve_weights(config)
    scrfd = weights.available("scrfd")
    face = "weights (SCRFD " + str(scrfd) + ")" if scrfd and config.face.detector != "mediapipe" else "default (mediapipe)"
    print(f"face        {face}")
    for name, cls in model_stages(config):
        section = getattr(config, name, None)
        mode = stage_mode(cls, section, weights)
        print(f"{name:<11} {mode:<8} {_stage_reason(cls, section, weights)}".rstrip())
    errors = _weight_errors(config, weights)
    for name in weights.model_fields:
        path = getattr(weights, name)
        state = "present" if weights.available(name) else "missing" if path else "not configured"
        print(f"  weights.{name:<12} {state:<15} {path or ''}")
    for error in errors:
        print(f"error: {error}")
    return 1 if errors else 0


def _weight_errors(config, weights) -> list[str]:
    """One line per weight the build's stages will load that is not what its stage expects (lock record,
    shape): checked here, before any worker starts."""
    from vividhead.pipelines.build import model_stages
    from vividhead.weights import MODELS
    from vividhead.weights_verify import verify_present

    stages = {name for name, _ in model_stages(config)} | ({"face"} if config.face.detector != "mediapipe" else set())
    return verify_present(weights, [m.name for m in MODELS.values() if m.build_stage in stages])


def _stage_reason(cls, section, weights) -> str:
    """The stage's one-line `reason()` without loading any model (empty when the stage cannot be built:
    `stage_mode` already prints that error)."""
    try:
        return cls(section, weights).reason()
    except Exception:  # noqa: BLE001 - the mode column carries the error
        return ""


def _report(out: Path, summary) -> None:
    from vividhead.manifest import read_manifest

    table = read_manifest(out)
    statuses = table.column("status").to_pylist()
    durations = [d or 0.0 for d in table.column("duration").to_pylist()]
    shards = sorted((out / "shards").glob("*.tar"))
    kept = statuses.count("kept")
    kept_h = sum(d for s, d in zip(statuses, durations) if s == "kept") / 3600
    rejected_h = sum(d for s, d in zip(statuses, durations) if s != "kept") / 3600
    reasons: dict[str, int] = {}
    for status, reason in zip(statuses, table.column("reject_reason").to_pylist()):
        if status != "kept":
            reasons[reason or status] = reasons.get(reason or status, 0) + 1
    print(f"shards:   {out / 'shards'} ({len(shards)} tar files)")
    print(f"manifest: {out / 'manifest.parquet'} ({len(statuses)} rows)")
    print(f"kept:     {kept} clips, {kept_h:.4f} h")
    print(f"rejected: {len(statuses) - kept} rows ({statuses.count('rejected')} rejected, "
          f"{statuses.count('skipped')} skipped, {statuses.count('failed')} failed), {rejected_h:.4f} h")
    if reasons:
        print("reasons:  " + ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])))
    resumed = f", {summary.units_resumed} units already done" if summary.units_resumed else ""
    redone = f", {len(summary.units_redone)} redone" if summary.units_redone else ""
    redone += f", {summary.units_redecided} re-decided from stored metrics" if summary.units_redecided else ""
    changed = " (config changed since the last run)" if summary.config_changed else ""
    print(f"this run: {summary.units} units{resumed}{redone}, {summary.seconds:.1f} s{changed}")
