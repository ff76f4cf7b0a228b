"""Inline SVG charts for the HTML report: horizontal bars, stacked bars and histograms.

Each function returns one `<svg>` element as a string; labels are escaped. No plotting library is
needed, and the charts scale with the page.
"""

from __future__ import annotations

from html import escape

import numpy as np

FONT = "font-family:system-ui,sans-serif;font-size:12px"
BLUE, ORANGE, GREY, RED = "#3b6fb6", "#e08a2c", "#9aa3ad", "#c0392b"
PROVENANCE_COLOURS = {"given": "#2e8b57", "model": BLUE, "unknown": GREY}


def _number(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def bars(rows: list[tuple[str, float, str]], width: int = 640, label_width: int = 220,
         colour: str = BLUE, title: str = "") -> str:
    """Horizontal bars: (label, value, text shown after the bar)."""
    height = 22 * len(rows) + 10
    top = max((value for _, value, _ in rows), default=0.0) or 1.0
    room = width - label_width - 140
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}" style="{FONT}">']
    for index, (label, value, note) in enumerate(rows):
        y = 6 + 22 * index
        length = max(1.0, room * value / top) if value > 0 else 0.0
        parts.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">{escape(label[:40])}</text>')
        parts.append(f'<rect x="{label_width}" y="{y}" width="{length:.1f}" height="16" fill="{colour}" rx="2"/>')
        parts.append(f'<text x="{label_width + length + 6:.1f}" y="{y + 13}" fill="#333">{escape(note)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(rows: list[tuple[str, list[tuple[float, str, str]]]], width: int = 640,
                 label_width: int = 160, title: str = "") -> str:
    """Horizontal bars split into segments: (label, [(value, colour, segment name)])."""
    height = 22 * len(rows) + 10
    top = max((sum(value for value, _, _ in segments) for _, segments in rows), default=0.0) or 1.0
    room = width - label_width - 70
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}" style="{FONT}">']
    for index, (label, segments) in enumerate(rows):
        y, x = 6 + 22 * index, float(label_width)
        parts.append(f'<text x="{label_width - 6}" y="{y + 13}" text-anchor="end">{escape(label[:28])}</text>')
        for value, colour, name in segments:
            length = room * value / top
            if length > 0:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{length:.1f}" height="16" fill="{colour}">'
                             f'<title>{escape(name)}: {_number(value)}</title></rect>')
            x += length
        total = sum(value for value, _, _ in segments)
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 13}" fill="#333">{_number(total)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def histogram(edges: np.ndarray, series: list[tuple[np.ndarray, str, str]], title: str,
              thresholds: list[tuple[float, str]] = (), width: int = 300, height: int = 150) -> str:
    """Stacked histogram of several series (counts per bin, colour, name) with threshold lines."""
    left, bottom, top_pad = 8, 30, 20
    plot_w, plot_h = width - 2 * left, height - bottom - top_pad
    stacked = np.sum([counts for counts, _, _ in series], axis=0) if series else np.zeros(len(edges) - 1)
    peak = float(stacked.max()) if stacked.size and stacked.max() > 0 else 1.0
    low, high = float(edges[0]), float(edges[-1])
    span = (high - low) or 1.0
    bin_w = plot_w / (len(edges) - 1)
    parts = [f'<svg class="chart hist" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
             f'role="img" aria-label="{escape(title)}" style="{FONT}">',
             f'<text x="{left}" y="13" font-weight="600">{escape(title)}</text>']
    base = np.zeros(len(edges) - 1)
    for counts, colour, name in series:
        for index, count in enumerate(counts):
            if count <= 0:
                continue
            bar_h = plot_h * count / peak
            y = top_pad + plot_h - plot_h * (base[index] + count) / peak
            parts.append(f'<rect x="{left + index * bin_w:.1f}" y="{y:.1f}" width="{max(bin_w - 1, 1):.1f}" '
                         f'height="{bar_h:.1f}" fill="{colour}"><title>{escape(name)}: ~{count:.0f}</title></rect>')
        base = base + counts
    axis_y = top_pad + plot_h
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#555"/>')
    parts.append(f'<text x="{left}" y="{axis_y + 14}">{_number(low)}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{axis_y + 14}" text-anchor="end">{_number(high)}</text>')
    for value, name in thresholds:
        if low <= value <= high:
            x = left + plot_w * (value - low) / span
            parts.append(f'<line x1="{x:.1f}" y1="{top_pad}" x2="{x:.1f}" y2="{axis_y}" stroke="{RED}" '
                         f'stroke-dasharray="4 3" stroke-width="1.5"><title>{escape(name)}</title></line>')
            anchor = "start" if x < left + plot_w / 3 else ("end" if x > left + 2 * plot_w / 3 else "middle")
            parts.append(f'<text x="{x:.1f}" y="{axis_y + 26}" text-anchor="{anchor}" fill="{RED}">'
                         f'{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
