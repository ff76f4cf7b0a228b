"""`vividhead inspect`: what a build holds, whether its shards are intact, and a report to look at.

Summary (default), `--json`, `--verify`, `--html`, `--sample KEY --out DIR` and `--what-if` all
stream the manifest and the shards; see docs/inspect.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HELP = "summarise, verify and report on a built dataset (counts, funnel, distributions, HTML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", metavar="PATH",
                        help="build directory, directory of shards, .tar/.parquet file, or a glob of them "
                             "(quote globs so that the shell leaves them alone)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
    parser.add_argument("--verify", action="store_true",
                        help="check every shard sample and the manifest agreement; exit 1 on any problem")
    parser.add_argument("--workers", type=int, default=1, metavar="N",
                        help="processes that verify shards in parallel (default 1)")
    parser.add_argument("--html", type=Path, metavar="REPORT.html", help="write a self-contained HTML report")
    parser.add_argument("--thumbnails", type=int, default=24, metavar="N",
                        help="kept clips sampled for the report's thumbnails (default 24)")
    parser.add_argument("--examples", type=int, default=3, metavar="N",
                        help="rejected examples shown per reason in the report (default 3)")
    parser.add_argument("--sample", metavar="KEY", help="dump one sample's files (needs --out)")
    parser.add_argument("--out", type=Path, metavar="DIR", help="where --sample writes the files")
    parser.add_argument("--what-if", dest="what_if", nargs="+", default=[], metavar="STAGE.PARAM=VALUE",
                        help="re-decide the funnel from the stored metrics under other thresholds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the report's sampling (default 0)")


def run(args: argparse.Namespace) -> int:
    from vividhead.inspection import text
    from vividhead.inspection.reader import InspectError, resolve

    # `--what-if a=1 DIR` lets argparse take DIR as an assignment: an item without "=" is a path.
    args.paths += [item for item in args.what_if if "=" not in item]
    args.what_if = [item for item in args.what_if if "=" in item]
    if not args.paths:
        raise InspectError("give a build directory, shards or a glob to inspect (PATH)")
    dataset = resolve(args.paths)
    if args.sample:
        from vividhead.inspection.sample import dump_sample

        if args.out is None:
            raise InspectError("--sample KEY needs --out DIR")
        written = dump_sample(dataset, args.sample, args.out)
        if args.json:
            print(json.dumps({"key": args.sample, "files": [str(path) for path in written]}, indent=2))
        else:
            print(f"{args.sample}: wrote {len(written)} file(s) to {args.out}")
            for path in written:
                print(f"  {path.name}  ({path.stat().st_size:,} bytes)")
        return 0

    what_if = None
    if args.what_if:
        from vividhead.inspection.whatif import parse_overrides, what_if as run_what_if

        overrides = parse_overrides(args.what_if, dataset)
    observers = []
    if args.html:
        from vividhead.inspection.report import ExamplePicker

        observers.append(ExamplePicker(args.thumbnails, args.examples))
    from vividhead.inspection.summary import summarize

    scan = summarize(dataset, observers, seed=args.seed)
    output: dict = {"summary": scan.summary}
    if args.what_if:
        what_if = run_what_if(dataset, overrides)
        output["what_if"] = what_if
    verification = None
    if args.verify:
        from vividhead.inspection.verify import verify

        verification = verify(dataset, workers=args.workers)
        output["verify"] = verification
    if args.html:
        from vividhead.inspection.report import write_report

        write_report(args.html, dataset, scan, observers[0], verification=verification, what_if=what_if)
        output["html"] = str(args.html)
    if args.json:
        print(json.dumps(output, indent=2, default=str))
    else:
        sys.stdout.write(text.render_summary(scan.summary))
        if what_if is not None:
            sys.stdout.write("\n" + text.render_what_if(what_if))
        if verification is not None:
            sys.stdout.write("\n" + text.render_verify(verification))
        if args.html:
            print(f"\nReport: {args.html}")
    return 1 if verification is not None and not verification["ok"] else 0
