"""`vividhead weights`: where every model file comes from, fetching it when asked, and what is on disk.

`vividhead weights` (or `weights list`) prints one row per model: what uses it, whether it is present, its
size and check, where it is expected, its source and licence, and what runs without it (`--json` for all
of it). `weights fetch NAME...` downloads into the folder the manifest points at (or `--to DIR`);
`weights verify [NAME...]` re-hashes what is on disk against the lock file and the published checksums.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

HELP = "list the model weights (source, licence, on disk, verified), fetch them when asked, verify them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _common_arguments(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION")
    _common_arguments(actions.add_parser("list", help="one row per model (the default)"), argparse.SUPPRESS)
    fetch = actions.add_parser("fetch", help="download models into the weights folder, verify and record them")
    _common_arguments(fetch, argparse.SUPPRESS)
    fetch.add_argument("names", nargs="+", metavar="NAME", help="model names as `vividhead weights` lists them")
    fetch.add_argument("--to", type=Path, help="download into DIR instead of where the manifest points")
    fetch.add_argument("--url", help="download from this HTTP(S) URL (a mirror of the same file) instead of the source")
    fetch.add_argument("--no-progress", action="store_true", help="no progress bar")
    verify = actions.add_parser("verify", help="hash every present model file against its lock record or pin")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to verify (default: all present)")
    _common_arguments(verify, argparse.SUPPRESS)


def _common_arguments(parser: argparse.ArgumentParser, default=None) -> None:
    """--config and --json, accepted before or after the action (an action's copy must not reset them)."""
    parser.add_argument("--config", type=Path, default=default,
                        help="build config whose weights_manifest / weights: entries apply")
    parser.add_argument("--json", action="store_true", default=default or False, help="print the list as JSON")


def run(args: argparse.Namespace) -> int:
    # CLI boundary: the build config is the curation application's (pipelines/config.py).
    from vividhead.pipelines.config import default_weights_manifest, load_build_config, resolve_weights
    from vividhead.configfile import ConfigError
    from vividhead.weights import MODELS

    try:
        config = load_build_config(args.config)
        weights = resolve_weights(config)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = getattr(args, "names", None) or list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        print(f"error: unknown model {unknown}; expected some of {list(MODELS)}", file=sys.stderr)
        return 2
    if args.action == "fetch":
        return _fetch(args, weights, names)
    manifest = config.weights_manifest or default_weights_manifest()
    rows = [_row(name, weights, manifest, set(config.weights), full=args.action == "verify") for name in names]
    if args.action == "verify":
        rows = [r for r in rows if r["status"] == "present"]
        if not rows:
            print("no model file is present (see `vividhead weights`)")
        for row in rows:
            print(f"{row['name']:<12} {row['check']:<10} {row['detail']}")
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"weights manifest: {manifest}\n")
        _print_table(rows)
    return 1 if any(r["check"] == "MISMATCH" for r in rows) else 0


def _row(name: str, weights, manifest: Path, overridden: set[str], full: bool) -> dict:
    """Everything `vividhead weights` says about one model."""
    from vividhead.weights import MODELS
    from vividhead.weights_verify import WeightsError, files_of, verify_weights

    model, path = MODELS[name], getattr(weights, name)
    status = "not configured" if path is None else "present" if path.exists() else "missing"
    check, detail, size = "-", "", None
    if status == "present":
        size = sum(p.stat().st_size for p in files_of(path).values())
        try:
            integrity = verify_weights(name, path, full=full)
            check, detail = {"lock": "lock ok", "pin": "sha256 ok", "other": "other file",
                              "unverified": "unverified"}[integrity.state], \
                integrity.detail
        except WeightsError as err:
            check, detail = "MISMATCH", str(err)
    return {"name": name, "title": model.title, "used_by": model.used_by, "status": status,
            "path": os.path.normpath(path) if path else None,
            "from": "config override" if name in overridden else f"manifest {manifest.name}",
            "size": size, "check": check, "detail": detail,
            "source": model.source.describe(), "sha256": model.source.sha256 or None,
            "published_size": model.source.size or None, "licence": model.licence, "without": model.without}


def _print_table(rows: list[dict]) -> None:
    print(f"{'model':<12} {'status':<9} {'size':>9}  {'check':<10} used by")
    for r in rows:
        size = _human(r["size"]) if r["size"] is not None else "-"
        print(f"{r['name']:<12} {r['status']:<9} {size:>9}  {r['check']:<10} {r['used_by']}")
    print(f"\n{'model':<12} expected at")
    for r in rows:
        print(f"{r['name']:<12} {r['path'] or '-'} ({r['from']})")
    print(f"\n{'model':<12} source (pinned SHA-256 where published)")
    for r in rows:
        print(f"{r['name']:<12} {r['source']}" + (f" sha256 {r['sha256']}" if r["sha256"] else ""))
    print(f"\n{'model':<12} licence")
    for r in rows:
        print(f"{r['name']:<12} {r['licence']}")
    print(f"\n{'model':<12} without it")
    for r in rows:
        print(f"{r['name']:<12} {r['without']}")
    problems = [f"{r['name']}: {r['detail']}" for r in rows if r["check"] in ("MISMATCH", "other file", "unverified")]
    print("\n" + "\n".join(problems) if problems else "", end="")
    print("\nfetch one with `vividhead weights fetch NAME`; re-hash what is on disk with `vividhead weights verify`")


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def _fetch(args: argparse.Namespace, weights, names: list[str]) -> int:
    from vividhead.weights_fetch import FetchError, fetch, remove_finished_archives
    from vividhead.weights_verify import WeightsError

    if args.url and len(names) != 1:
        print("error: --url takes exactly one NAME", file=sys.stderr)
        return 2
    failed, folders = 0, set()
    for name in names:
        entry = getattr(weights, name)
        if entry is None:
            print(f"error: {name} has no path in the weights manifest; set one (or a config override) first",
                  file=sys.stderr)
            failed += 1
            continue
        dest = args.to / entry.name if args.to else entry
        try:
            print(fetch(name, dest, args.url or "", progress=not args.no_progress))
        except (FetchError, WeightsError) as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
        folders.add(dest.absolute().parent)
    for folder in folders:
        remove_finished_archives(folder)
    if args.to and not failed:
        print(f"the weights manifest does not point at {args.to}: add `weights:` overrides to the build config to use them")
    return 1 if failed else 0
