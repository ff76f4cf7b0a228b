"""The evaluation record: one row per metric (value, or the reason it is unavailable), per-video
sync scores, and the settings used; written as JSON and as a readable table (Markdown)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

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


def format_table(report: EvalReport) -> str:
    """A Markdown table in table order: value, direction, protocol, then counts or the reason."""
    arrows = {"lower": " ↓", "higher": " ↑", "": ""}
    lines = [f"generated: {report.generated}", f"reference: {report.reference or '-'}", "",
             "| metric | value | protocol | notes |", "|---|---:|---|---|"]
    order = [name for name, _ in METRIC_ORDER]
    for row in sorted(report.rows, key=lambda r: order.index(r.metric) if r.metric in order else len(order)):
        if row.status == "ok":
            notes = ", ".join(f"{k}={v}" for k, v in row.detail.items() if not isinstance(v, (list, dict))) or "-"
        else:
            notes = f"unavailable: {row.reason}"
        value = "n/a" if row.value is None else f"{row.value:.2f}"
        lines.append(f"| {row.metric}{arrows[row.better]} | {value} | {row.protocol or '-'} | {notes} |")
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
