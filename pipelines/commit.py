"""The driver's side of committing: which segments go into which shard, and the progress bar.

Clips are committed on the workers, one segment each, as they leave the model stages
(`pipelines/segments.py`). The driver's `Committer` receives only their small records. It keeps
the list of segments not yet packed and, as soon as they hold a shard's worth of kept samples
(`shards.max_samples` or `shards.max_bytes`), sends them to a `pack` task on a worker, with every
rejected row that came in meanwhile; what is left is packed when the build ends. It counts each
unit's rows to know when the unit is complete, records units whose worker died as failed, stops
the build with one line on an environment failure, and draws the progress bar.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import ray
from tqdm import tqdm

from vividhead.envfail import ENVIRONMENT_REASON, EnvironmentFailure
from vividhead.pipelines.output import OutputDir, pack_name
from vividhead.pipelines.records import Clip
from vividhead.pipelines.segments import Segment, pack, write_segment, write_source_segment
from vividhead.pipelines.stages import Resources
from vividhead.pipelines.units import SourceRejection, WorkUnit


@dataclass(frozen=True)
class ShardTarget:
    """When a shard is full: whichever of the two is reached first."""

    max_samples: int
    max_bytes: int


@dataclass
class Tally:
    """Rows committed by this run, for the progress bar."""

    kept: int = 0
    other: int = 0
    kept_hours: float = 0.0


class Committer:
    """Collects the committed segments' records on the driver and packs them into shards on the workers."""

    def __init__(self, out: OutputDir, metric_types: dict[str, str], hashes: dict[str, str], target: ShardTarget,
                 pack_resources: Resources, pending: list[Segment], next_number: int, progress: bool) -> None:
        self.out, self.metric_types, self.hashes, self.target = out, metric_types, hashes, target
        self.pending = list(pending)
        self.number = next_number
        self.progress = progress
        self.tally = Tally()
        self.bar: tqdm | None = None
        self.seen: dict[str, set[str]] = {}             # keys received of each unit not yet complete
        self.expected: dict[str, int] = {}              # unit -> how many clips its decode task sent
        self.complete: set[str] = set()
        self.packs: list[ray.ObjectRef] = []
        self._pack = ray.remote(pack).options(num_cpus=pack_resources.num_cpus, num_gpus=pack_resources.num_gpus,
                                              max_retries=2)

    # ------------------------------------------------------------------------------------- input
    def reject(self, rejection: SourceRejection) -> None:
        """Commit a source rejected, skipped or failed before segmentation (one row)."""
        if rejection.reason == ENVIRONMENT_REASON:
            raise EnvironmentFailure(rejection.detail)
        self._pending(write_source_segment(self.out, rejection, self.hashes))

    def start(self, units: list[WorkUnit], sources: int, done: int) -> None:
        if self.progress:
            self.bar = tqdm(total=len(units), initial=done, unit="unit", desc=f"build: {sources} sources",
                            dynamic_ncols=True)

    def add(self, record: dict) -> None:
        """The record of one committed clip (`segments.write_segment`); packs when a shard is full."""
        if record["env"]:
            raise EnvironmentFailure(record["env"])
        unit, key = record["unit"], record["key"]
        seen = self.seen.setdefault(unit, set())
        if unit in self.complete or key in seen:
            return                                     # a task Ray retried sends its clips again
        seen.add(key)
        if not record["duplicate"]:
            self._pending(Segment(unit, key, record["path"], record["status"], record["bytes"], record["hours"]))
        if record["pieces"]:
            self.expected[unit] = record["pieces"]
        if len(seen) == self.expected.get(unit):
            self.complete.add(unit)
            del self.seen[unit]
            if self.bar is not None:
                self.bar.update(1)
        self._check_packs(block=False)

    def finish_missing(self, units: list[WorkUnit], detail: str) -> None:
        """Units that never reported all their clips (their worker died): a failed row, redone on resume."""
        for unit in units:
            if unit.unit_id in self.complete:
                continue
            failed = Clip(key=f"{unit.unit_id}_failed", source=unit.source, start=unit.start, end=unit.end,
                          status="failed", reject_stage="extract", reject_reason="worker_died", reject_detail=detail)
            record = write_segment({"unit": unit.unit_id, "clip": pickle.dumps(failed), "pieces": 0},
                                   self.out.root, self.hashes, {})
            self.add(record)

    def finish(self) -> None:
        """Pack what is left and wait for every pack (at the end of a build that ran to its end)."""
        if self.pending:
            self._send(self.pending)
            self.pending = []
        self._check_packs(block=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    # ------------------------------------------------------------------------------------- packing
    def _pending(self, segment: Segment) -> None:
        self.pending.append(segment)
        self._count(segment)
        kept = [s for s in self.pending if s.status == "kept"]
        if len(kept) >= self.target.max_samples or sum(s.bytes for s in kept) >= self.target.max_bytes:
            self._send(self.pending)
            self.pending = []

    def _send(self, segments: list[Segment]) -> None:
        paths = [s.path for s in sorted(segments, key=lambda s: (s.unit, s.key))]
        self.packs.append(self._pack.remote(self.out.root, pack_name(self.number), paths, self.metric_types,
                                            self.hashes["stages_hash"]))
        self.number += 1

    def _check_packs(self, block: bool) -> None:
        """Collect finished packs; an environment failure inside one stops the build with its line."""
        if not self.packs:
            return
        ready, self.packs = ray.wait(self.packs, num_returns=len(self.packs), timeout=None if block else 0)
        for failure in ray.get(ready):
            if failure:
                raise EnvironmentFailure(failure)

    def _count(self, segment: Segment) -> None:
        if segment.status == "kept":
            self.tally.kept += 1
            self.tally.kept_hours += segment.hours
        else:
            self.tally.other += 1
        if self.bar is not None:
            self.bar.set_postfix(kept=self.tally.kept, rejected=self.tally.other,
                                 hours=f"{self.tally.kept_hours:.3f}", refresh=False)
