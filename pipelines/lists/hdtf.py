"""HDTF (github.com/MRzzm/HDTF, folder HDTF_dataset): three subsets RD, WDA and WRA, each as

- `{S}_video_url.txt`: `NAME URL` (the URL may carry `&t=`, a start offset that is not a range);
- `{S}_annotion_time.txt`: `NAME.mp4 mm:ss-mm:ss [mm:ss-mm:ss ...]`, the ranges to use;
- `{S}_crop_wh.txt`: `NAME_i.mp4 x w y h`, the crop of range i in pixels of the downloaded video;
- `{S}_resolution.txt`: `NAME.mp4 HEIGHT`, the height those pixels refer to (optional here).

A video without ranges is not listed for use and is left out; a range without a crop has no box.
"""

from __future__ import annotations

from pathlib import Path

from vividhead.pipelines.lists.common import ListError, Listed, clock, read_lines
from vividhead.pipelines.records import FaceBox

SUFFIX = "_video_url.txt"


def read(path: Path) -> list[Listed]:
    """Every subset of an HDTF folder, or the one subset whose `*_video_url.txt` is given."""
    urls = [path] if path.is_file() else sorted(path.glob(f"*{SUFFIX}"))
    if not urls:
        raise ListError(f"{path}: no *{SUFFIX} file (HDTF lists: RD_video_url.txt, WDA_..., WRA_...)")
    return [listed for file in urls for listed in _subset(file)]


def _table(path: Path) -> dict[str, list[str]]:
    """A space-separated file as {first column: the other columns}; absent file: empty."""
    if not path.exists():
        return {}
    return {parts[0]: parts[1:] for parts in (line.split() for line in read_lines(path))}


def _subset(url_file: Path) -> list[Listed]:
    prefix = url_file.name[: -len(SUFFIX)]
    folder = url_file.parent
    times = _table(folder / f"{prefix}_annotion_time.txt")
    crops = _table(folder / f"{prefix}_crop_wh.txt")
    heights = _table(folder / f"{prefix}_resolution.txt")
    out = []
    for number, line in enumerate(read_lines(url_file), 1):
        parts = line.split()
        if len(parts) != 2:
            raise ListError(f"{url_file}:{number}: expected `NAME URL`, got {line!r}")
        name, url = parts
        ranges = times.get(f"{name}.mp4", [])
        if not ranges:
            continue
        height = heights.get(f"{name}.mp4", [None])[0]
        listed = Listed(url)
        for index, text in enumerate(ranges):
            where = f"{folder / (prefix + '_annotion_time.txt')}: {name}.mp4"
            if text.count("-") != 1:
                raise ListError(f"{where}: expected a range like 00:20-01:35, got {text!r}")
            start, end = (clock(t, where) for t in text.split("-"))
            listed.add(start, end, _box(crops.get(f"{name}_{index}.mp4"), height))
        out.append(listed)
    return out


def _box(crop: list[str] | None, height: str | None) -> FaceBox | None:
    if not crop or len(crop) != 4:
        return None
    x, w, y, h = (float(v) for v in crop)
    return FaceBox(x, y, x + w, y + h, ref_width=None, ref_height=float(height) if height else None)
