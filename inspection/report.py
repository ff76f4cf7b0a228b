"""`inspect --html report.html`: one self-contained HTML file a person can open or mail.

Inline CSS, charts as inline SVG (plots.py) and frames as JPEG data URIs (frames.py). Its size is
bounded whatever the dataset's size: a seeded uniform sample of kept clips gets thumbnails, each
rejection reason gets a few examples decoded from the source's time range, source tables are cut
to the top rows, and distributions are drawn from the bounded samples of the summary pass.
"""

from __future__ import annotations

import datetime as dt
import os
from collections import defaultdict
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from vividhead.inspection import plots
from vividhead.inspection.frames import clip_tiles, source_tiles
from vividhead.inspection.reader import Dataset, InspectError
from vividhead.shards import ShardError, read_members
from vividhead.inspection.stats import BottomK, histogram_edges, scaled_histogram
from vividhead.inspection.summary import KEY_METRICS, PROVENANCES, Scan
from vividhead.inspection.text import UNITS, span

MAX_REASONS = 40          # reasons that get examples; the table lists them all
TOP_SOURCES = 50
EXAMPLE_COLUMNS = ("key", "status", "reject_stage", "reject_reason", "reject_detail", "shard", "uri", "start",
                   "end", "crop_x", "crop_y", "crop_side", "source_id", "dataset", "duration")

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#222;background:#f6f7f9}
header{background:#1f2a38;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:2px 0;color:#c9d3df;font-size:13px}main{padding:8px 28px 40px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:14px 18px;margin:16px 0;box-shadow:0 1px 3px #0001}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#eef2f7;border-radius:6px;padding:10px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{font-size:12px;color:#555}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{padding:3px 10px;border-bottom:1px solid #e3e6ea;text-align:left}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.grid{display:flex;flex-wrap:wrap;gap:10px}
.clip{border:1px solid #dde1e6;border-radius:6px;padding:6px;background:#fafbfc;font-size:11px;max-width:100%}
.clip img{height:96px;margin-right:2px;border-radius:3px}.clip code{font-size:10px;word-break:break-all}
.problem{color:#a33;font-size:12px}.ok{color:#2e7d32;font-weight:600}.bad{color:#c0392b;font-weight:600}
.legend span{display:inline-block;margin-right:14px;font-size:12px}.legend i{display:inline-block;width:10px;height:10px;margin-right:4px}
.note{color:#666;font-size:12px}details summary{cursor:pointer;margin:10px 0;font-size:13px;color:#1f4f8a}
"""


class ExamplePicker:
    """Picks, during the summary pass, a uniform sample of kept clips and a few rows per rejection reason."""

    def __init__(self, thumbnails: int = 24, per_reason: int = 3) -> None:
        self.kept = BottomK(max(thumbnails, 0))
        self.per_reason = max(per_reason, 0)
        self.rejected: dict[tuple[str, str], BottomK] = {}

    def columns(self) -> list[str]:
        return list(EXAMPLE_COLUMNS)

    def update(self, batch: pa.RecordBatch, priorities: np.ndarray) -> None:
        status = pc.fill_null(batch.column("status"), "unknown")
        kept = pc.equal(status, "kept").to_numpy(zero_copy_only=False)
        if self.kept.capacity:
            self._offer(self.kept, batch, np.flatnonzero(kept & (priorities < self.kept.threshold())), priorities)
        if not self.per_reason:
            return
        labels = [f"{stage or '(no stage)'}\x00{reason or '(no reason)'}" for stage, reason in
                  zip(batch.column("reject_stage").to_pylist(), batch.column("reject_reason").to_pylist())]
        by_label: dict[str, list[int]] = defaultdict(list)
        for index in np.flatnonzero(~kept):
            by_label[labels[index]].append(int(index))
        for label, indices in by_label.items():
            pair = tuple(label.split("\x00"))
            if pair not in self.rejected:
                if len(self.rejected) >= MAX_REASONS:
                    continue
                self.rejected[pair] = BottomK(self.per_reason)
            sample = self.rejected[pair]
            rows = np.array(indices)
            best = rows[np.argsort(priorities[rows])[: self.per_reason]]
            self._offer(sample, batch, best[priorities[best] < sample.threshold()], priorities)

    @staticmethod
    def _offer(sample: BottomK, batch: pa.RecordBatch, indices: np.ndarray, priorities: np.ndarray) -> None:
        if indices.size == 0:
            return
        rows = batch.take(pa.array(indices)).to_pylist()
        for index, row in zip(indices, rows):
            sample.offer(float(priorities[index]), row)


def _thresholds(dataset: Dataset, columns: set[str]) -> dict[str, list[tuple[float, str]]]:
    """Build-config thresholds to draw on each metric's histogram."""
    from vividhead.inspection.whatif import build_config, threshold_rules

    try:
        rules = threshold_rules(build_config(dataset), columns)
    except InspectError:
        return {}
    lines: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for rule in rules:
        if not rule.enabled or isinstance(rule.threshold, bool):     # a switch draws no line
            continue
        if rule.measure == "one_minus":
            lines[rule.metric].append((1.0 - rule.threshold, rule.name))
        elif rule.measure == "abs":
            lines[rule.metric] += [(rule.threshold, rule.name), (-rule.threshold, rule.name)]
        else:
            lines[rule.metric].append((rule.threshold, rule.name))
    return lines


def _table(headers: list[str], rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f'<th class="{"n" if i in numeric else ""}">{escape(h)}</th>' for i, h in enumerate(headers))
    body = "".join("<tr>" + "".join(f'<td class="{"n" if i in numeric else ""}">{escape(str(cell))}</td>'
                                    for i, cell in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _overview(summary: dict[str, Any]) -> str:
    cards = [("kept clips", f"{summary['kept']['clips']:,}"), ("kept duration", span(summary["kept"]["hours"])),
             ("candidates", f"{summary['candidates']['clips']:,}"), ("sources", f"{len(summary['sources']):,}"),
             ("datasets", f"{len(summary['datasets']):,}"), ("shards", f"{summary['shard_files']:,}")]
    html = '<div class="cards">' + "".join(f"<div class=card><b>{escape(v)}</b><span>{escape(k)}</span></div>"
                                            for k, v in cards) + "</div>"
    rows = [[name, f"{p['kept']['clips']:,}", span(p["kept"]["hours"]), f"{p['candidates']['clips']:,}",
             span(p["candidates"]["hours"])] for name, p in summary["datasets"].items()]
    html += "<h3>Per dataset</h3>" + _table(["dataset", "kept", "kept duration", "candidates", "candidate duration"],
                                           rows, {1, 2, 3, 4})
    sources = summary["sources"][:TOP_SOURCES]
    rows = [[s["source_id"], s["dataset"], f"{s['kept']['clips']:,}", span(s["kept"]["hours"]),
             f"{s['candidates']['clips']:,}"] for s in sources]
    more = len(summary["sources"]) - len(sources)
    html += (f"<h3>Sources (top {len(sources)} by kept duration)</h3>"
             + _table(["source", "dataset", "kept", "kept duration", "candidates"], rows, {2, 3, 4})
             + (f'<p class="note">... and {more:,} more sources (see --json)</p>' if more > 0 else ""))
    return html


def _funnel(summary: dict[str, Any]) -> str:
    funnel = summary["funnel"]
    total = funnel["candidates"]["clips"] or 1
    rows = [("candidates", funnel["candidates"]["clips"], f"{funnel['candidates']['clips']:,} · "
             f"{span(funnel['candidates']['hours'])}")]
    for step in funnel["stages"]:
        left = step["remaining"]
        rows.append((f"after {step['stage']}", left["clips"],
                     f"{left['clips']:,} (-{step['clips']:,}) · {span(left['hours'])}"))
    rows.append(("kept", funnel["kept"]["clips"], f"{funnel['kept']['clips']:,} · {span(funnel['kept']['hours'])}"))
    reasons = [[step["stage"], reason, f"{tally['clips']:,}", span(tally["hours"]), f"{100 * tally['clips'] / total:.1f}%"]
               for step in funnel["stages"] for reason, tally in step["reasons"].items()]
    reason_bars = [(f"{step['stage']}: {reason}", tally["clips"], f"{tally['clips']:,}")
                   for step in funnel["stages"] for reason, tally in step["reasons"].items()]
    return (plots.bars(rows, title="funnel") + "<h3>Rejections by stage and reason</h3>"
            + (plots.bars(reason_bars, colour=plots.ORANGE, title="rejection reasons") if reason_bars else
               '<p class="note">No clip was rejected.</p>')
            + _table(["stage", "reason", "clips", "duration", "of candidates"], reasons, {2, 3, 4}))


def _distributions(scan: Scan, dataset: Dataset, columns: set[str]) -> str:
    summarizer, lines = scan.summarizer, _thresholds(dataset, columns)
    legend = (f'<p class="legend"><span><i style="background:{plots.BLUE}"></i>kept</span>'
              f'<span><i style="background:{plots.ORANGE}"></i>rejected</span>'
              f'<span><i style="background:{plots.RED}"></i>build threshold</span></p>')
    key_charts, other_charts, key_rows, other_rows = [], [], [], []
    for name in summarizer.numeric:
        kept, other = summarizer.kept_dists[name], summarizer.other_dists[name]
        if kept.count + other.count == 0:
            continue
        charts, rows = (key_charts, key_rows) if name in KEY_METRICS else (other_charts, other_rows)
        edges = histogram_edges([kept, other], extra=[value for value, _ in lines.get(name, [])])
        label = f"{name} ({UNITS[name]})" if name in UNITS else name
        charts.append(plots.histogram(edges, [(scaled_histogram(kept, edges), plots.BLUE, "kept"),
                                              (scaled_histogram(other, edges), plots.ORANGE, "rejected")],
                                      label, lines.get(name, [])))
        for part, dist in (("kept", kept), ("rejected", other)):
            if dist.count:
                p5, p50, p95 = dist.quantiles()
                rows.append([label, part, f"{dist.count:,}", f"{dist.total / dist.count:.3g}", f"{p5:.3g}",
                             f"{p50:.3g}", f"{p95:.3g}", f"{dist.minimum:.3g}", f"{dist.maximum:.3g}"])
    if not key_charts and not other_charts:
        return '<p class="note">The manifest holds no numeric metrics.</p>'
    headers = ["metric", "clips", "n", "mean", "5%", "median", "95%", "min", "max"]
    html = (legend + '<div class="grid">' + "".join(key_charts) + "</div>"
            + _table(headers, key_rows, set(range(2, 9))))
    if other_charts:
        html += (f"<details><summary>{len(other_charts)} more metric columns</summary>"
                 + '<div class="grid">' + "".join(other_charts) + "</div>"
                 + _table(headers, other_rows, set(range(2, 9))) + "</details>")
    return html + ('<p class="note">Histograms and quantiles come from a uniform sample of at most 8,192 values '
                   "per column and group; counts, means, minima and maxima are exact.</p>")


def _attributes(summary: dict[str, Any]) -> str:
    legend = '<p class="legend">' + "".join(f'<span><i style="background:{colour}"></i>{name}</span>'
                                            for name, colour in plots.PROVENANCE_COLOURS.items()) + "</p>"
    html = legend
    for name, values in summary["attributes"].items():
        rows = [(value, [(entry["provenance"].get(kind, 0), plots.PROVENANCE_COLOURS[kind], kind) for kind in PROVENANCES])
                for value, entry in list(values.items())[:20]]
        html += f"<h3>{escape(name)}</h3>" + (plots.stacked_bars(rows, title=name) if rows else
                                               '<p class="note">no kept clips</p>')
    return html + '<p class="note">Kept clips per value, coloured by where the value came from.</p>'


def _kept_clips(dataset: Dataset, picker: ExamplePicker) -> str:
    chosen = picker.kept.sorted_items()
    if not chosen:
        return '<p class="note">No kept clips.</p>'
    by_shard: dict[str, set[str]] = defaultdict(set)
    for row in chosen:
        by_shard[row.get("shard") or ""].add(row["key"])
    shards = {path.name: path for path in dataset.shards}
    files: dict[str, dict[str, bytes]] = {}
    problems: dict[str, str] = {}
    for shard, keys in by_shard.items():
        if shard not in shards:
            problems.update({key: f"its shard {shard or '(none)'} is not among the inputs" for key in keys})
            continue
        try:
            files.update(read_members(shards[shard], keys, {"mp4", "mask.png"}))
        except (OSError, ShardError) as error:  # a damaged tar: say so, keep the report going
            problems.update({key: f"shards/{shard} does not read: {error}" for key in keys})
    cards = []
    for row in chosen:
        key = row["key"]
        sample = files.get(key, {})
        frames = clip_tiles(sample["mp4"], sample.get("mask.png")) if "mp4" in sample else None
        problem = problems.get(key) or (frames.problem if frames else f"no mp4 for {key} in shards/{row.get('shard')}")
        images = "".join(f'<img src="{tile}" alt="frame of {escape(key)}">' for tile in (frames.tiles if frames else ()))
        duration = f"{row['duration']:.1f} s" if row.get("duration") is not None else ""
        cards.append(f'<div class="clip">{images}<br><code>{escape(key)}</code><br>{escape(str(row.get("dataset")))}'
                     f' · {escape(str(row.get("source_id")))} · {duration}'
                     + (f'<div class="problem">{escape(problem)}</div>' if problem and not images else "") + "</div>")
    return ('<p class="note">Frames at 10%, 50% and 90% of each clip, then the first frame with the mask '
            "outline (green).</p>" + '<div class="grid">' + "".join(cards) + "</div>")


def _rejected(summary: dict[str, Any], picker: ExamplePicker) -> str:
    counts = {(step["stage"], reason): tally["clips"] for step in summary["funnel"]["stages"]
              for reason, tally in step["reasons"].items()}
    html = ('<p class="note">Frames at 10%, 50% and 90% of the rejected time range, decoded from the source; '
            "the orange box is the crop the clip would have had.</p>")
    if not picker.rejected:
        return html + '<p class="note">No rejected clips in the manifest.</p>'
    for (stage, reason), sample in sorted(picker.rejected.items(), key=lambda pair: -counts.get(pair[0], 0)):
        html += f"<h3>{escape(stage)}: {escape(reason)} <span class=note>({counts.get((stage, reason), 0):,} clips)</span></h3>"
        cards = []
        for row in sample.sorted_items():
            crop = None
            if row.get("crop_side"):
                crop = (int(row["crop_x"] or 0), int(row["crop_y"] or 0), int(row["crop_side"]))
            frames = source_tiles(row.get("uri"), row.get("start"), row.get("end"), crop)
            where = (f"{row['start']:.2f}-{row['end']:.2f} s" if row.get("start") is not None and row.get("end") is not None
                     else "whole source")
            images = "".join(f'<img src="{tile}" alt="source frame">' for tile in frames.tiles)
            detail = row.get("reject_detail") or ""
            cards.append(f'<div class="clip">{images}<br><code>{escape(str(row.get("key") or row.get("source_id")))}</code>'
                         f"<br>{escape(Path(str(row.get('uri') or '')).name)} · {where}<br>{escape(detail)}"
                         + (f'<div class="problem">{escape(frames.problem)}</div>' if frames.problem else "") + "</div>")
        html += '<div class="grid">' + "".join(cards) + "</div>"
    return html


def _verify(verification: dict[str, Any]) -> str:
    status = ('<p class="ok">OK: every shard is intact and agrees with the manifest.</p>' if verification["ok"] else
              f'<p class="bad">FAILED: {verification["problem_count"]:,} problem(s).</p>')
    rows = [[kind, f"{count:,}"] for kind, count in sorted(verification["problem_counts"].items())]
    problems = "".join(f"<li>{escape(problem)}</li>" for problem in verification["problems"])
    return (status + f'<p class="note">{verification["shards"]} shard(s), {verification["samples"]:,} sample(s), '
            f'{verification["decoded_frames"]:,} frames decoded.</p>'
            + (_table(["problem", "count"], rows, {1}) + f"<ul>{problems}</ul>" if rows else ""))


def _what_if(result: dict[str, Any]) -> str:
    before, after = result["before"], result["after"]
    rows = [["kept", f"{before['kept']['clips']:,}", f"{after['kept']['clips']:,}",
             span(before["kept"]["hours"]), span(after["kept"]["hours"])]]
    for stage in dict.fromkeys(list(before["stages"]) + list(after["stages"])):
        b, a = before["stages"].get(stage, {"clips": 0, "hours": 0.0}), after["stages"].get(stage, {"clips": 0, "hours": 0.0})
        rows.append([f"rejected by {stage}", f"{b['clips']:,}", f"{a['clips']:,}", span(b["hours"]), span(a["hours"])])
    changes = ", ".join(f"{name} = {value}" for name, value in result["overrides"].items())
    return (f"<p>Changed: <b>{escape(changes)}</b></p>"
            + _table(["", "clips now", "clips what-if", "duration now", "duration what-if"], rows, {1, 2, 3, 4})
            + (f'<p class="note">{result["needs_recompute"]["clips"]:,} clip(s) would pass the changed stage but were '
               "never scored by later stages.</p>" if result["needs_recompute"]["clips"] else ""))


def write_report(path: Path, dataset: Dataset, scan: Scan, picker: ExamplePicker,
                 verification: dict[str, Any] | None = None, what_if: dict[str, Any] | None = None) -> Path:
    """Write the report atomically (temporary name, then rename) and return its path."""
    summary = scan.summary
    columns = set(scan.summarizer.numeric)
    builds = "; ".join(f"build {build.get('version', '?')}, config {str(build.get('config_hash', '?'))[:12]}"
                       + "".join(f", {stage} {mode}" for stage, mode in build.get("stage_modes", {}).items())
                       for build in summary["builds"])
    sections = [("Overview", _overview(summary)), ("Funnel", _funnel(summary)),
                ("Distributions", _distributions(scan, dataset, columns)),
                ("Attribute balance", _attributes(summary)),
                (f"Kept clips (a sample of {len(picker.kept.items)} of {summary['kept']['clips']:,})",
                 _kept_clips(dataset, picker)),
                ("Rejected examples per reason", _rejected(summary, picker))]
    if what_if is not None:
        sections.append(("What-if", _what_if(what_if)))
    if verification is not None:
        sections.append(("Verification", _verify(verification)))
    inputs = ", ".join(summary["inputs"][:3]) + (f" and {len(summary['inputs']) - 3:,} more"
                                                 if len(summary["inputs"]) > 3 else "")
    generated = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join(f'<section id="s{index}"><h2>{escape(title)}</h2>{content}</section>'
                   for index, (title, content) in enumerate(sections))
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>vividhead dataset report</title>'
            f'<meta name="viewport" content="width=device-width,initial-scale=1"><style>{CSS}</style></head><body>'
            f'<header><h1>vividhead dataset report</h1><p>{escape(inputs)}</p>'
            f'<p>rows from {escape(summary["source_of_rows"])} · {escape(builds or "no build.json")} · generated '
            f"{generated}</p></header><main>{body}</main></body></html>")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    temporary.write_text(html, encoding="utf-8")
    temporary.replace(path)
    return path
