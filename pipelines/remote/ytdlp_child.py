"""The yt-dlp half of a video download, run as a child process so that its parent can end it at a deadline.

`python -m vividhead.pipelines.remote.ytdlp_child JOB.json RESULT.json`: extract the page once through
yt-dlp's Python API, choose the format (`choose_format`), download each requested section (yt-dlp's
download-sections: `download_ranges`, with `force_keyframes_at_cuts` for exact cuts) or the whole
video, and write what happened to RESULT.json, failures as machine-readable reasons (`classify`).
This module imports nothing of vividhead's media stack, so the child starts fast.
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

# (reason, phrases of yt-dlp's messages), first match wins; see pipelines/remote/__init__.py REASONS.
PATTERNS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("rate_limited", ("http error 429", "too many requests")),
    ("sign_in_required", ("sign in to confirm", "confirm your age", "age-restricted", "inappropriate for some users",
                          "members-only", "join this channel", "login required", "requires authentication",
                          "use --cookies")),
    ("geo_blocked", ("available in your country", "geo restrict", "geo-restrict", "from your location",
                     "blocked it in your country", "http error 451")),
    ("removed_or_private", ("http error 404", "http error 410", "video unavailable", "has been removed",
                            "private video", "this video is private", "does not exist", "no longer available",
                            "account associated with this video has been terminated", "video is unavailable")),
    ("forbidden", ("http error 403", "forbidden")),
    ("no_format_big_enough", ("requested format is not available",)),
)


def classify(message: str) -> str:
    """The machine-readable reason of a yt-dlp error message."""
    text = message.lower()
    for reason, phrases in PATTERNS:
        if any(phrase in text for phrase in phrases):
            return reason
    return "download_failed"


def _short_side(f: dict[str, Any]) -> int | None:
    width, height = f.get("width"), f.get("height")
    return min(width, height) if width and height else None


def choose_format(formats: list[dict[str, Any]], min_short_side: int) -> tuple[dict[str, str] | None, str]:
    """The smallest video whose short side reaches `min_short_side`, plus the best audio-only stream when the
    video has none: ({format_id, resolution, vcodec, acodec}, "") or (None, why not).

    A video of unknown size (a plain file behind the generic extractor) is taken when no size is known;
    the probe then checks it like any local file."""
    videos = [f for f in formats if f.get("vcodec") != "none"]
    sized = [f for f in videos if _short_side(f)]
    big = [f for f in sized if _short_side(f) >= min_short_side]
    if big:
        video = min(big, key=lambda f: (_short_side(f), f.get("tbr") or f.get("filesize") or 0))
    elif videos and not sized:
        video = videos[-1]                  # yt-dlp lists formats worst to best
    else:
        largest = max((_short_side(f) for f in sized), default=None)
        return None, (f"the largest video format's short side is {largest} px < remote.min_short_side {min_short_side}"
                      if largest else "no video format")
    audio = None
    if video.get("acodec") == "none":
        audios = [f for f in formats if f.get("vcodec") == "none" and f.get("acodec") not in (None, "none")]
        audio = max(audios, key=lambda f: (f.get("abr") or f.get("tbr") or 0), default=None)
    chosen = {
        "format_id": video["format_id"] + (f"+{audio['format_id']}" if audio else ""),
        "resolution": f"{video['width']}x{video['height']}" if _short_side(video) else "unknown",
        "vcodec": str(video.get("vcodec") or "unknown"),
        "acodec": str((audio or video).get("acodec") or "unknown"),
    }
    return chosen, ""


def run(job: dict[str, Any]) -> dict[str, Any]:
    """Do one job (see the module docstring); never raises for a download failure."""
    from yt_dlp import YoutubeDL
    from yt_dlp.utils import DownloadError, download_range_func

    base = {"quiet": True, "no_warnings": True, "noprogress": True, "noplaylist": True, "color": "never",
            "socket_timeout": job["socket_timeout"], "retries": 1, "extractor_retries": 0,
            "cookiefile": job.get("cookies"), "proxy": job.get("proxy")}
    base = {k: v for k, v in base.items() if v is not None}
    try:
        with YoutubeDL(base) as ydl:
            info = ydl.extract_info(job["url"], download=False)
        chosen, why = choose_format(info.get("formats") or [info], job["min_short_side"])
        if chosen is None:
            return {"ok": False, "reason": "no_format_big_enough", "detail": f"{job['url']}: {why}"}
        for section in job["sections"]:
            stem = Path(section["target"]).with_suffix("")
            opts = {**base, "format": chosen["format_id"], "outtmpl": f"{stem}.download.%(ext)s",
                    "merge_output_format": "mp4"}
            if section.get("start") is not None:
                opts["download_ranges"] = download_range_func(None, [(section["start"], section["end"])])
                opts["force_keyframes_at_cuts"] = job["exact_cuts"]
            with YoutubeDL(opts) as ydl:
                ydl.process_ie_result(copy.deepcopy(info), download=True)
            made = [p for p in stem.parent.glob(f"{stem.name}.download.*") if not p.name.endswith((".part", ".ytdl"))]
            if not made:
                return {"ok": False, "reason": "download_failed", "detail": f"{job['url']}: yt-dlp wrote no file"}
            made[0].replace(section["target"])
            Path(section["target"]).with_suffix(".json").write_text(json.dumps(chosen))   # the cache's record
        return {"ok": True, "format": chosen}
    except DownloadError as err:
        message = str(err).replace("\n", " ")
        return {"ok": False, "reason": classify(message), "detail": f"{job['url']}: {message}"}


def main(argv: list[str]) -> int:
    job_path, result_path = (Path(a) for a in argv)
    result = run(json.loads(job_path.read_text()))
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result))
    tmp.replace(result_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
