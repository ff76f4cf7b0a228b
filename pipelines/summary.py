"""What a build did, computed once: totals of the whole manifest and what this run did; build.json.

`summarize` reads the consolidated manifest once; the CLI prints the `BuildSummary` it returns and
build.json records it with the config, the hashes and the stage table's order (`stages`, which the
inspect funnel reads).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa

from vividhead import __version__
from vividhead.pipelines.output import OutputDir
from vividhead.pipelines.records import STATUSES
from vividhead.storage import put_bytes

@dataclass
class BuildSummary:
    """What a build holds (the whole manifest) and what this run did; written to build.json."""

    out: str
    rows: int = 0
    shards: int = 0
    clips: dict[str, int] = field(default_factory=dict)          # status -> rows
    hours: dict[str, float] = field(default_factory=dict)        # kept / rejected (every row not kept) -> hours
    reasons: dict[str, int] = field(default_factory=dict)        # rejection reason (or status) -> rows not kept
    sources: int = 0
    units: int = 0
    units_resumed: int = 0                                         # every piece committed before this run
    units_continued: int = 0                                       # continued where their committed pieces stop
    units_redone: dict[str, str] = field(default_factory=dict)
    units_redecided: int = 0
    orphans_removed: int = 0
    dropped: dict[str, str] = field(default_factory=dict)          # what resume could not read -> why
    config_changed: bool = False
    stage_modes: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def count(summary: BuildSummary, table: pa.Table, shards: int) -> None:
    """Fill the totals of `summary` from the whole manifest."""
    statuses = table.column("status").to_pylist()
    durations = [d or 0.0 for d in table.column("duration").to_pylist()]
    reasons = table.column("reject_reason").to_pylist()
    summary.rows, summary.shards = len(statuses), shards
    summary.clips = {status: statuses.count(status) for status in STATUSES}
    summary.hours = {"kept": sum(d for s, d in zip(statuses, durations) if s == "kept") / 3600,
                     "rejected": sum(d for s, d in zip(statuses, durations) if s != "kept") / 3600}
    summary.reasons = {}
    for status, reason in zip(statuses, reasons):
        if status != "kept":
            summary.reasons[reason or status] = summary.reasons.get(reason or status, 0) + 1
    summary.reasons = dict(sorted(summary.reasons.items(), key=lambda kv: -kv[1]))


def write_build_json(out: OutputDir, config: Any, hashes: dict[str, str], stages: list[str],
                     summary: BuildSummary) -> None:
    record = {"version": __version__, **hashes, "config": config.model_dump(mode="json"), "stages": stages,
              "totals": summary.clips, "hours": summary.hours, "this_run": asdict(summary),
              "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    put_bytes(out.root / "build.json", json.dumps(record, indent=2, sort_keys=True, default=str).encode())
