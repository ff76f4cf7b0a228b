"""Stage 2 probe decisions and work units: what each source becomes before any frame is decoded.

A source that cannot be used (no audio, too short, too small for a 512 crop, unreadable) becomes a
`SourceRejection`: one manifest row. A usable source becomes one `WorkUnit` per given time range,
or per `segment.unit_seconds` of a long source, so that one long video does not serialise a build.
Unit ids depend only on the source bytes and the time range, so a re-run finds the same units.

A unit whose first pieces were committed before a build stopped is resumed inside: `resume_point`
reads its committed rows and says where the unbroken run of pieces from the unit start ends, and
`WorkUnit.resumed` makes the unit that the decode pass restarts there (pipelines/extract.py).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vividhead.media import MediaError, Probe, frame_at, probe
from vividhead.pipelines.records import FaceBox, Source

if TYPE_CHECKING:                      # the build config is made from the stage table, which names this module
    from vividhead.pipelines.config import BuildConfig

# Stage 2's raw metrics: what the probe found, recorded on every row of the source.
METRICS: dict[str, str] = {
    "duration": "float", "width": "int", "height": "int", "fps": "float", "vfr": "bool", "rotation": "int",
    "video_codec": "str", "pix_fmt": "str", "audio_rate": "int", "audio_channels": "int",
}


def probe_metrics(info: Probe) -> dict[str, Any]:
    """The `probe.*` metrics of a row, from the probe of its source."""
    return {f"probe.{name}": getattr(info, name) for name in METRICS}


@dataclass(frozen=True)
class WorkUnit:
    """A time range of one local source file, decoded once by one task."""

    unit_id: str
    source: Source
    path: str
    start: float
    end: float
    given_range: bool            # True: the range came from sources.yaml and is not scene-split
    info: Probe
    resume_at: float | None = None          # seconds: the end of the last committed piece; the pass starts here
    resume_starts_at_cut: bool = False      # that piece ended at a scene cut, so the next one starts at it
    resume_last_cut: float | None = None    # seconds: the last scene cut before resume_at (None: none in the unit)
    box: FaceBox | None = None              # the list's face box for this range: stage 5 opens on the face it holds

    def resumed(self, point: ResumePoint) -> WorkUnit:
        """This unit, restarting where `point` says (unchanged when nothing of it was committed)."""
        return dataclasses.replace(self, resume_at=point.at, resume_starts_at_cut=point.at_cut,
                                   resume_last_cut=point.last_cut)


@dataclass(frozen=True)
class ResumePoint:
    """What of a unit is committed: its pieces from the unit start up to `at`, and every committed key."""

    complete: bool                          # the committed pieces reach the unit's end: nothing to redo
    at: float | None = None                 # seconds: where the first missing piece starts (None: the unit start)
    at_cut: bool = False                    # the piece before `at` ended at a scene cut
    last_cut: float | None = None           # seconds: the last scene cut before `at`
    keys: frozenset[str] = frozenset()      # keys of every committed row (a resumed pass may make some again)


def resume_point(unit: WorkUnit, rows: Iterable[Mapping[str, Any]], fps: int) -> ResumePoint:
    """Where `unit`'s decode pass restarts, from the manifest rows already committed for it.

    Each piece starts where the one before it ended (`segment.piece_start`, `end`; compared in frames
    at `fps`, within half a frame), so the pass can restart at the end of the unbroken run of committed
    pieces from the unit start; rows past a gap (committed out of order) are in `keys`, and the pass
    makes them again. Failed rows do not count. A unit with a row that is no piece (a source-level or
    skipped row, without `segment.*` metrics) is complete.
    """
    committed = [row for row in rows if row["status"] != "failed"]
    keys = frozenset(row["key"] for row in committed)
    if any(row.get("segment.piece_start") is None for row in committed):
        return ResumePoint(complete=True, keys=keys)
    pieces: dict[int, Mapping[str, Any]] = {}
    for row in committed:
        pieces.setdefault(round(row["segment.piece_start"] * fps), row)
    first = position = frame_at(unit.start, fps)
    cuts: list[int] = []
    complete = False
    while not complete and (row := pieces.get(position)) is not None and round(row["end"] * fps) > position:
        position = round(row["end"] * fps)
        if row["segment.end_reason"] == "cut":
            cuts.append(position)
        complete = row["segment.end_reason"] == "end"
    if complete or position == first:
        return ResumePoint(complete=complete, keys=keys)
    at_cut = bool(cuts) and cuts[-1] == position
    before = cuts[:-1] if at_cut else cuts
    return ResumePoint(complete=False, at=position / fps, at_cut=at_cut,
                       last_cut=before[-1] / fps if before else None, keys=keys)


@dataclass(frozen=True)
class SourceRejection:
    """A source rejected or skipped before segmentation (one manifest row)."""

    unit_id: str
    source: Source
    stage: str
    reason: str
    detail: str
    status: str = "rejected"
    info: Probe | None = None


def unit_id(md5: str, start: float, end: float) -> str:
    return f"{md5[:16]}_{round(start * 1000):08d}_{round(end * 1000):08d}"


def source_unit_id(source: Source, kind: str) -> str:
    """Unit id of a source-level row: by MD5 when known, else by the source id."""
    if source.md5:
        return f"{source.md5[:16]}_{kind}"
    return f"{kind}_{hashlib.sha1(source.source_id.encode('utf-8', 'surrogateescape')).hexdigest()[:16]}"


def plan_source(source: Source, path: str, config: BuildConfig) -> list[WorkUnit] | SourceRejection:
    """Probe one fetched source and split it into work units, or reject it with its reason."""
    try:
        info = probe(path)
    except MediaError as err:
        return SourceRejection(source_unit_id(source, "source"), source, "probe", err.reason, err.detail)
    problems = _problems(info, config)
    if problems:
        stage, reason, _ = problems[0]
        detail = "; ".join(text for _, _, text in problems)
        return SourceRejection(source_unit_id(source, "source"), source, stage, reason, detail, info=info)
    if source.ranges:
        ranges = [(max(0.0, s), min(e, info.duration), source.box(i)) for i, (s, e) in enumerate(source.ranges)]
        units = [WorkUnit(unit_id(source.md5, s, e), source, path, s, e, True, info, box=box)
                 for s, e, box in ranges if e > s]
        if not units:
            return SourceRejection(source_unit_id(source, "source"), source, "segment", "range_outside_source",
                                   f"no given range lies inside the source's {info.duration:.2f} s", info=info)
        return units
    step = config.segment.unit_seconds
    count = max(1, math.ceil(info.duration / step - 1e-9))
    bounds = [(i * step, min((i + 1) * step, info.duration)) for i in range(count)]
    return [WorkUnit(unit_id(source.md5, s, e), source, path, s, e, False, info) for s, e in bounds]


def _problems(info: Probe, config: BuildConfig) -> list[tuple[str, str, str]]:
    """Every reason to reject the whole source, in stage order: (stage, reason, sentence)."""
    problems = []
    if not info.has_audio:
        problems.append(("probe", "no_audio", "no audio stream"))
    if info.fps <= 0 or info.duration <= 0:
        problems.append(("probe", "no_frames", f"no usable frames (duration {info.duration:.3f} s)"))
    elif info.duration < config.segment.min_seconds:
        problems.append(("segment", "too_short",
                         f"{info.duration:.2f} s is shorter than segment.min_seconds {config.segment.min_seconds} s"))
    largest = min(info.width, info.height)
    needed = config.face.size / config.face.max_upscale
    if largest < needed:
        problems.append(("face", "resolution_too_low",
                         f"the largest square crop is {largest} px; a {config.face.size} crop needs >= {needed:.0f} px "
                         f"(face.max_upscale {config.face.max_upscale})"))
    return problems
