"""Fetching remote sources: plain http(s) files (`http.py`) and video-site pages through yt-dlp (`ytdlp.py`,
run in a child process `ytdlp_child.py` so that a deadline can end it), polite per host (`hosts.py`).

Every failure is a `MediaError` with a machine-readable reason (`REASONS`), so a dead link becomes a
manifest row and `inspect`'s funnel shows how much of a list is still alive.
"""

from __future__ import annotations

from types import MappingProxyType

# Stage 1's raw metrics of a remote source, on every row made from it.
METRICS = MappingProxyType({
    "format_id": "str",      # yt-dlp's format (video+audio ids), or "file" for a plain URL
    "resolution": "str",     # WxH of the chosen video format ("unknown" when the site does not say)
    "vcodec": "str",
    "acodec": "str",
    "offset": "float",       # seconds in the listed video where the fetched file starts (a section's start)
})

# Why a remote source yields nothing (the manifest's reject_reason, stage `sources`).
REASONS = MappingProxyType({
    "removed_or_private": "the video is gone: removed, private, or HTTP 404/410",
    "geo_blocked": "not available from this machine's country",
    "sign_in_required": "the site asks to sign in (age gate, members only, 'confirm you're not a bot')",
    "forbidden": "HTTP 403: the host refused this machine (cookies, IP block, or expired link)",
    "rate_limited": "HTTP 429 after every retry with backoff",
    "no_format_big_enough": "no video format reaches remote.min_short_side",
    "download_deadline": "the download took longer than run.download_deadline",
    "download_too_slow": "the download ran below run.download_min_rate",
    "download_failed": "any other download failure (the detail says which)",
})
