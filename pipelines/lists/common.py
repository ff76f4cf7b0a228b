"""What every list importer shares: the `Listed` record, text reading with the lists' quirks, video IDs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from vividhead.envfail import InputError
from vividhead.pipelines.records import FaceBox

YOUTUBE = "https://www.youtube.com/watch?v={id}"
_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")


class ListError(InputError):
    """A list that cannot be read: the message names the file, the line and what was expected."""


@dataclass
class Listed:
    """One video of a list: where it is, the ranges to use (seconds), a face box per range, attributes."""

    video: str                                               # a YouTube ID or a URL
    ranges: list[tuple[float, float]] = field(default_factory=list)
    boxes: list[FaceBox | None] = field(default_factory=list)
    attributes: dict[str, str] = field(default_factory=dict)  # language / gender / age / ethnicity, given

    def add(self, start: float, end: float, box: FaceBox | None) -> None:
        self.ranges.append((start, end))
        self.boxes.append(box)


def read_lines(path: Path) -> list[str]:
    """The non-blank lines of a text list, without a byte-order mark and without surrounding spaces."""
    return [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines() if line.strip()]


def grouped(items: list[tuple[str, float, float, FaceBox | None, dict[str, str]]]) -> list[Listed]:
    """(video, start, end, box, attributes) rows as one `Listed` per video, in first-listed order."""
    videos: dict[str, Listed] = {}
    for video, start, end, box, attributes in items:
        listed = videos.setdefault(youtube_id(video), Listed(video.strip(), attributes=dict(attributes)))
        listed.add(start, end, box)
    return list(videos.values())


def youtube_id(url_or_id: str) -> str:
    """The video ID of a YouTube watch / youtu.be / shorts URL (dropping `&t=` and the like), or the text as given."""
    text = url_or_id.strip()
    if _ID.match(text):
        return text
    parsed = urlparse(text)
    host = (parsed.hostname or "").lower()
    if host.endswith("youtube.com") and "v" in parse_qs(parsed.query):
        return parse_qs(parsed.query)["v"][0]
    if host == "youtu.be" and parsed.path.strip("/"):
        return parsed.path.strip("/").split("/")[0]
    if host.endswith("youtube.com") and parsed.path.startswith(("/shorts/", "/embed/", "/live/")):
        return parsed.path.split("/")[2]
    return text


def video_url(video: str, template: str | None = None) -> str:
    """The page yt-dlp fetches: an ID through `template` (default the YouTube watch page); a YouTube URL
    normalised to its watch page (a list's `&t=` start offset is not a range); any other URL as given."""
    text = video.strip()
    if text.startswith(("http://", "https://")):
        vid = youtube_id(text)
        return YOUTUBE.format(id=vid) if vid != text else text
    return (template or YOUTUBE).format(id=text)


def clock(text: str, where: str) -> float:
    """Seconds of a `[hh:]mm:ss[.f]` time."""
    try:
        seconds = 0.0
        for part in text.strip().split(":"):
            seconds = seconds * 60 + float(part)
        return seconds
    except ValueError:
        raise ListError(f"{where}: expected a time like 01:35, got {text!r}") from None
