"""Plain-text rendering of a summary, a verification and a what-if, for a person at a terminal."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

from vividhead.inspection.summary import KEY_METRICS

UNITS = {"duration": "s", "crop_side": "px"}
TOP_SOURCES = 8
TOP_VALUES = 6


def span(hours: float) -> str:
    """A duration a person reads at a glance: seconds, minutes or hours."""
    seconds = hours * 3600.0
    if seconds < 120:
        return f"{seconds:.1f} s"
    if hours < 2:
        return f"{seconds / 60:.1f} min"
    return f"{hours:,.1f} h"


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000 or value == int(value):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"
    return f"{value:.3g}"


def render_summary(summary: dict[str, Any]) -> str:
    lines: list[str] = []
    inputs = summary["inputs"]
    shown = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3:,} more" if len(inputs) > 3 else "")
    lines.append(f"vividhead inspect: {shown}")
    lines.append(f"  rows from {summary['source_of_rows']}; {summary['manifest_files']} manifest file(s), "
                 f"{summary['shard_files']} shard(s)")
    for build in summary["builds"]:
        modes = ", ".join(f"{stage} {mode}" for stage, mode in build.get("stage_modes", {}).items())
        lines.append(f"  build {build.get('version', '?')}, config {str(build.get('config_hash', '?'))[:12]}"
                     + (f"; model stages: {modes}" if modes else ""))
    kept, candidates = summary["kept"], summary["candidates"]
    lines.append("")
    lines.append(f"Kept {kept['clips']:,} clips, {span(kept['hours'])}  "
                 f"(of {candidates['clips']:,} candidates, {span(candidates['hours'])})")
    lines += _datasets(summary)
    lines += _funnel(summary)
    lines += _distributions(summary)
    lines += _attributes(summary)
    return "\n".join(lines) + "\n"


def _datasets(summary: dict[str, Any]) -> list[str]:
    lines = ["", f"  {'dataset':<28}{'kept':>8}{'duration':>12}{'candidates':>12}"]
    for name, parts in summary["datasets"].items():
        lines.append(f"  {name[:28]:<28}{parts['kept']['clips']:>8,}{span(parts['kept']['hours']):>12}"
                     f"{parts['candidates']['clips']:>12,}")
    sources = summary["sources"]
    shown = sources[:TOP_SOURCES]
    lines.append(f"  {'source (top by kept hours)':<28}{'kept':>8}{'duration':>12}{'candidates':>12}")
    for source in shown:
        name = source["source_id"]
        name = name if len(name) <= 28 else PurePath(name).name
        name = name if len(name) <= 28 else "..." + name[-25:]
        lines.append(f"  {name:<28}{source['kept']['clips']:>8,}{span(source['kept']['hours']):>12}"
                     f"{source['candidates']['clips']:>12,}")
    if len(sources) > len(shown):
        lines.append(f"  ... and {len(sources) - len(shown):,} more sources (--json lists all)")
    return lines


def _funnel(summary: dict[str, Any]) -> list[str]:
    funnel = summary["funnel"]
    lines = ["", "Funnel", f"  {'':<34}{'clips':>9}{'duration':>11}{'left':>9}"]
    lines.append(f"  {'candidates':<34}{funnel['candidates']['clips']:>9,}{span(funnel['candidates']['hours']):>11}")
    for step in funnel["stages"]:
        lines.append(f"  - {step['stage']:<32}{step['clips']:>9,}{span(step['hours']):>11}"
                     f"{step['remaining']['clips']:>9,}")
        for reason, tally in step["reasons"].items():
            lines.append(f"      {reason[:30]:<30}{tally['clips']:>9,}{span(tally['hours']):>11}")
    lines.append(f"  {'= kept':<34}{funnel['kept']['clips']:>9,}{span(funnel['kept']['hours']):>11}")
    unverified = funnel.get("kept_sync_unverified") or {}
    if unverified.get("clips"):
        lines.append(f"    {'of which sync not verified':<32}{unverified['clips']:>9,}{span(unverified['hours']):>11}"
                     "   (drop them: --what-if sync.keep_unsure=false)")
    if summary.get("rows_without_duration"):
        lines.append(f"  ({summary['rows_without_duration']:,} rows have no duration, e.g. sources rejected "
                     "before segmentation; they count 0 hours)")
    return lines


def _distributions(summary: dict[str, Any]) -> list[str]:
    lines = ["", "Distributions (median [5% .. 95%], n)", f"  {'':<26}{'kept':<34}rejected"]
    shown = {name: parts for name, parts in summary["distributions"].items()
             if name in KEY_METRICS and (parts["kept"]["count"] or parts["rejected"]["count"])}
    for name, parts in shown.items():
        label = f"{name} ({UNITS[name]})" if name in UNITS else name
        cells = []
        for part in ("kept", "rejected"):
            stats = parts[part]
            if not stats["count"]:
                cells.append(f"{'-':<34}")
                continue
            quantiles = f"{_number(stats['median'])} [{_number(stats['p5'])} .. {_number(stats['p95'])}]"
            cells.append(f"{quantiles:<25} n={stats['count']:<6,}")
        lines.append(f"  {label[:25]:<26}{cells[0]:<34}{cells[1].rstrip()}")
    if not shown:
        lines.append("  (no numeric metrics in the manifest)")
    more = len(summary["distributions"]) - len(shown)
    if more > 0:
        lines.append(f"  ... {more} more metric columns in --json and --html")
    return lines


def _attributes(summary: dict[str, Any]) -> list[str]:
    kept = summary["kept"]["clips"] or 1
    lines = ["", "Attribute balance (kept clips; provenance given/model/unknown)"]
    for name, values in summary["attributes"].items():
        parts = []
        for value, entry in list(values.items())[:TOP_VALUES]:
            provenance = "/".join(str(entry["provenance"].get(kind, 0)) for kind in ("given", "model", "unknown"))
            parts.append(f"{value} {100 * entry['clips'] / kept:.0f}% ({provenance})")
        more = len(values) - TOP_VALUES
        lines.append(f"  {name:<11}" + ", ".join(parts) + (f", ... {more} more" if more > 0 else ""))
    return lines


def render_verify(report: dict[str, Any]) -> str:
    lines = [f"Verify: {report['shards']} shard(s), {report['samples']:,} sample(s) checked, "
             f"{report['decoded_frames']:,} frames decoded"]
    if report["ok"]:
        lines.append("  OK: every shard is intact and agrees with the manifest")
    else:
        lines.append(f"  FAILED: {report['problem_count']:,} problem(s)")
        for problem in report["problems"]:
            lines.append(f"  - {problem}")
        if report["problem_count"] > len(report["problems"]):
            lines.append(f"  ... {report['problem_count'] - len(report['problems']):,} more (see --json)")
    return "\n".join(lines) + "\n"


def render_what_if(result: dict[str, Any]) -> str:
    lines = ["What-if: " + ", ".join(f"{name}={value!r}" for name, value in result["overrides"].items())]
    before, after = result["before"], result["after"]
    lines.append(f"  {'':<30}{'now':>14}{'what-if':>14}{'change':>10}")
    lines.append(f"  {'kept clips':<30}{before['kept']['clips']:>14,}{after['kept']['clips']:>14,}"
                 f"{after['kept']['clips'] - before['kept']['clips']:>+10,}")
    change = after["kept"]["hours"] - before["kept"]["hours"]
    lines.append(f"  {'kept duration':<30}{span(before['kept']['hours']):>14}{span(after['kept']['hours']):>14}"
                 f"{('+' if change >= 0 else '-') + span(abs(change)):>10}")
    stages = list(dict.fromkeys(list(before["stages"]) + list(after["stages"])))
    for stage in stages:
        now = before["stages"].get(stage, {"clips": 0})["clips"]
        then = after["stages"].get(stage, {"clips": 0})["clips"]
        lines.append(f"  {'rejected by ' + stage:<30}{now:>14,}{then:>14,}{then - now:>+10,}")
    unknown = result["needs_recompute"]
    if unknown["clips"]:
        lines.append(f"  {unknown['clips']:,} clip(s) ({span(unknown['hours'])}) would pass the changed stage but "
                     "were never scored by later stages: re-run the build to decide them")
    if result["disagreements"]:
        lines.append(f"  note: {result['disagreements']:,} row(s) where the stored decision differs from the "
                     "re-decision rules under the build's own thresholds; those rows keep their stored decision")
    lines.append(f"  re-decided stages: {', '.join(result['redecided_stages']) or 'none'}")
    return "\n".join(lines) + "\n"
