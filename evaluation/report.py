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

# The paper's Tables 3-4 order, with the direction that is better.
METRIC_ORDER: tuple[tuple[str, Better], ...] = (
    ("FID", "lower"), ("FVD", "lower"), ("Sync-C", "higher"), ("Sync-D", "lower"),
    ("AV offset", ""), ("FPS", "higher"),
)


@dataclass
class MetricRow:
    """One metric: its value when computed, else the reason it is unavailable."""

    metric: str
    value: float | None
    status: Status
    better: Better = ""
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)   # sample counts, device, spread, ...

    @classmethod
    def ok(cls, metric: str, value: float, **detail: Any) -> "MetricRow":
        return cls(metric, float(value), "ok", dict(METRIC_ORDER).get(metric, ""), None, detail)

    @classmethod
    def unavailable(cls, metric: str, reason: str, **detail: Any) -> "MetricRow":
        return cls(metric, None, "unavailable", dict(METRIC_ORDER).get(metric, ""), reason, detail)


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


def _fmt(value: float | None, metric: str) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if metric == "AV offset" else f"{value:.2f}"


def format_table(report: EvalReport) -> str:
    """A Markdown table in the paper's metric order: value, direction, sample count or reason."""
    arrows = {"lower": "↓", "higher": "↑", "": ""}
    lines = [f"generated: {report.generated}", f"reference: {report.reference or '-'}", "",
             "| metric | value | notes |", "|---|---:|---|"]
    order = [name for name, _ in METRIC_ORDER]
    for row in sorted(report.rows, key=lambda r: order.index(r.metric) if r.metric in order else len(order)):
        if row.status == "ok":
            notes = ", ".join(f"{k}={v}" for k, v in row.detail.items() if not isinstance(v, (list, dict)))
        else:
            notes = f"unavailable: {row.reason}"
        lines.append(f"| {row.metric} {arrows[row.better]} | {_fmt(row.value, row.metric)} | {notes} |")
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
