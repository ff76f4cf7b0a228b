"""The evaluation record: one row per metric (value, or the reason it is unavailable, with what produced
it and its warnings), per-video sync scores, and the settings used; written as JSON and as a readable
table (Markdown). Figures are printed to 4 significant digits; the JSON keeps them whole."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from vividhead.evaluation.provenance import Provenance, RowWarning

Better = Literal["lower", "higher", ""]
Status = Literal["ok", "unavailable"]

# Table order (quality, then sync, then speed) with the direction that is better. The AV offset row
# is the mean |offset| in frames: 0 is in sync, whichever way the audio is off.
_SYNC: tuple[tuple[str, Better], ...] = (("Sync-C", "higher"), ("Sync-D", "lower"), ("AV offset", "lower"))
REFERENCE_SUFFIX = " (reference)"
METRIC_ORDER: tuple[tuple[str, Better], ...] = (
    ("FID", "lower"), ("FVD", "lower"), *_SYNC, *((m + REFERENCE_SUFFIX, b) for m, b in _SYNC), ("FPS", "higher"),
)


@dataclass
class MetricRow:
    """One metric: its value when computed, else the reason it is unavailable."""

    metric: str
    value: float | None
    status: Status
    better: Better = ""
    reason: str | None = None
    protocol: str | None = None                            # how it was computed (None: FPS, a timing)
    detail: dict[str, Any] = field(default_factory=dict)   # sample counts, device, spread, ...
    provenance: Provenance | None = None                   # what produced it (None: nothing ran)
    warnings: list[RowWarning] = field(default_factory=list)

    @classmethod
    def ok(cls, metric: str, value: float, protocol: str | None = None, **detail: Any) -> "MetricRow":
        return cls(metric, float(value), "ok", dict(METRIC_ORDER).get(metric, ""), None, protocol, detail)

    @classmethod
    def unavailable(cls, metric: str, reason: str, protocol: str | None = None) -> "MetricRow":
        return cls(metric, None, "unavailable", dict(METRIC_ORDER).get(metric, ""), reason, protocol)


@dataclass
class VideoScore:
    """Per-video record: frames used and SyncNet scores (None when not computed)."""

    key: str
    origin: str
    set: Literal["generated", "reference"]
    frames: int
    fps: float
    sync_c: float | None = None
    sync_d: float | None = None
    offset: int | None = None
    note: str | None = None      # why a metric skipped this video
    sync_frames: int | None = None   # 25 fps frames SyncNet scored


@dataclass
class EvalReport:
    """Everything `vividhead eval` measured, in a form that serialises to JSON unchanged."""

    generated: str
    reference: str | None
    rows: list[MetricRow]
    videos: list[VideoScore]
    settings: dict[str, Any]
    versions: dict[str, str]

    def row(self, metric: str) -> MetricRow | None:
        return next((r for r in self.rows if r.metric == metric), None)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)


def figure(value: float) -> str:
    """`value` to 4 significant digits (whole numbers from 1000 up): 0.05123, 8.310, 103.1, 12346."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    decimals = 3 - math.floor(math.log10(abs(value)))
    if decimals > 0 and abs(round(value, decimals)) >= 10 ** (4 - decimals):
        decimals -= 1                                  # 9.9996 rounds up to 10.00, not 10.000
    return f"{value:.{max(decimals, 0)}f}"


def _note(key: str, value: Any) -> str:
    return f"{key}={figure(value) if isinstance(value, float) else value}"


def _notes(row: MetricRow) -> str:
    if row.status != "ok":
        notes = [f"unavailable: {row.reason}"]
    else:
        notes = [_note(k, v) for k, v in row.detail.items() if not isinstance(v, (list, dict))]
    if row.provenance is not None and row.provenance.face_detector:
        notes.insert(0, f"detector={row.provenance.face_detector}")
    if row.warnings:
        notes.insert(0, "⚠ " + ", ".join(w.code for w in row.warnings))
    return ", ".join(notes) or "-"


def format_table(report: EvalReport) -> str:
    """A Markdown table in table order: value, direction, protocol, then warnings, the face detector and
    counts (or the reason); the warnings in full below it."""
    arrows = {"lower": " ↓", "higher": " ↑", "": ""}
    lines = [f"generated: {report.generated}", f"reference: {report.reference or '-'}", "",
             "| metric | value | protocol | notes |", "|---|---:|---|---|"]
    order = [name for name, _ in METRIC_ORDER]
    rows = sorted(report.rows, key=lambda r: order.index(r.metric) if r.metric in order else len(order))
    for row in rows:
        value = "n/a" if row.value is None else figure(row.value)
        lines.append(f"| {row.metric}{arrows[row.better]} | {value} | {row.protocol or '-'} | {_notes(row)} |")
    warned: dict[str, list[str]] = {}                  # message -> the rows that carry it
    for row in rows:
        for warning in row.warnings:
            warned.setdefault(warning.message, []).append(row.metric)
    if warned:
        lines += ["", "warnings (the figures above stand, but read them with these):"]
        lines += [f"- {', '.join(metrics)}: {message}" for message, metrics in warned.items()]
    skipped = [v for v in report.videos if v.note]
    if skipped:
        lines += ["", "videos skipped by a metric:"] + [f"- {v.set} {v.key}: {v.note}" for v in skipped]
    return "\n".join(lines) + "\n"


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: EvalReport, out_dir: Path) -> tuple[Path, Path]:
    """Write `eval.json` and `eval.md` into `out_dir`; returns both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, table_path = out_dir / "eval.json", out_dir / "eval.md"
    _atomic_write(json_path, report.to_json() + "\n")
    _atomic_write(table_path, format_table(report))
    return json_path, table_path
