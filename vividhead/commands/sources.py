"""`vividhead sources`: expand a sources file (paths, URLs, videos, dataset lists) into sources, fetching nothing.

Check a list before spending a day downloading it: one line per source, or with `--json` one JSON
object per source with its `url`, `kind`, `dataset`, `ranges` (seconds), `box` (one per range) and given attributes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from vividhead.configfile import ConfigError, load_yaml_model

HELP = "expand a sources file (files, URLs, videos, dataset lists) without fetching anything"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sources", type=Path, help="sources.yaml")
    parser.add_argument("--json", action="store_true", help="one JSON object per source (url, ranges, boxes, ...)")


def run(args: argparse.Namespace) -> int:
    from vividhead.pipelines.config import SourcesFile  # CLI boundary: the pipeline loads only when asked
    from vividhead.pipelines.sources import expand_sources

    try:
        sources_file = load_yaml_model(SourcesFile, args.sources)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sources, missing = expand_sources(sources_file, args.sources.resolve().parent)
    for source in sources:
        record = source_record(source)
        if args.json:
            print(json.dumps(record))
        else:
            spans = " ".join(f"{s:g}-{e:g}" for s, e in source.ranges) or "whole"
            print(f"{source.kind:<5} {source.dataset:<12} {source.uri}  {spans}")
    for source, reason, detail in missing:
        print(f"missing: {reason}: {detail}", file=sys.stderr)
    ranges = sum(len(s.ranges) for s in sources)
    print(f"{len(sources)} sources, {ranges} ranges, {len(missing)} entries matching nothing", file=sys.stderr)
    return 0


def source_record(source) -> dict:
    """The JSON object of one source: where it is, what to cut from it, the listed boxes and attributes."""
    boxes = [None if b is None else {"x0": b.x0, "y0": b.y0, "x1": b.x1, "y1": b.y1,
                                     "ref_width": b.ref_width, "ref_height": b.ref_height} for b in source.boxes]
    record = {"id": source.source_id, "url": source.uri, "kind": source.kind, "dataset": source.dataset,
              "ranges": [list(r) for r in source.ranges], "attributes": dict(source.attributes)}
    if boxes:
        record["box"] = boxes                           # one per range, null where the list gives none
    return record
