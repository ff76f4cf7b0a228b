"""Video-site sources (`video:`, `list:`) through yt-dlp, in a child process that a deadline can end.

`fetch_video` downloads only the listed ranges (one cached file per section) or, without ranges, the
whole video, and returns one (source, file) pair per piece: a section becomes a source of its own,
`URL#t=START,END`, whose range is the whole file and whose `sources.offset` metric says where in the
video it starts. A re-run finds the cached sections and fetches nothing. A 429 backs the host off
and retries (`remote.retries`); other failures, and a 429 after the last retry, are reasons.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from vividhead.media import MediaError
from vividhead.pipelines.records import Source
from vividhead.pipelines.remote.hosts import HostGate, backoff_seconds
from vividhead.pipelines.remote.http import Limits, RateWatch

Section = tuple[int | None, float | None, float | None]     # (range index, start, end); (None, None, None): whole


def fetch_video(source: Source, downloads: Path, run: Any, remote: Any,
                gate: HostGate | None = None) -> list[tuple[Source, Path | MediaError]]:
    """Each piece of a video source with its local file, or the MediaError that says why it has none."""
    folder = downloads / "videos" / hashlib.sha1(source.uri.encode()).hexdigest()[:16]
    sections: list[Section] = ([(i, s, e) for i, (s, e) in enumerate(source.ranges)]
                               if source.ranges and remote.sections else [(None, None, None)])
    targets = {section: folder / _name(section, remote.exact_cuts) for section in sections}
    todo = [section for section in sections if not _cached(targets[section])]
    failure: MediaError | None = None
    if todo:
        try:
            _download(source.uri, [(targets[s], s[1], s[2]) for s in todo], folder, run, remote,
                      gate or HostGate(downloads / ".hosts", remote.per_host, remote.spacing))
        except MediaError as err:
            failure = err
    out: list[tuple[Source, Path | MediaError]] = []
    for section in sections:
        target = targets[section]
        if _cached(target):
            out.append((_piece(source, section, json.loads(target.with_suffix(".json").read_text())), target))
        else:
            missing = failure or MediaError("download_failed", f"{source.uri}: yt-dlp made no file")
            out.append((_piece(source, section, {}), missing))
    return out


def _name(section: Section, exact: bool) -> str:
    _, start, end = section
    return "whole.mp4" if start is None else f"{start:.3f}-{end:.3f}{'' if exact else '.keyframes'}.mp4"


def _cached(target: Path) -> bool:
    return target.is_file() and target.with_suffix(".json").is_file()


def _piece(source: Source, section: Section, fetched: dict[str, Any]) -> Source:
    """The source a piece becomes: the video itself (whole), or its section as a source of its own."""
    index, start, end = section
    found = tuple(fetched.items()) + (("offset", start or 0.0),)
    if start is None:
        return replace(source, fetched=found)
    uri = f"{source.uri}#t={start:g},{end:g}"
    box = source.box(index)
    return Source(f"{source.dataset}:{uri}", uri, source.dataset, ((0.0, end - start),), source.attributes,
                  kind="video", boxes=(box,) if box is not None else (), fetched=found)


def _download(url: str, jobs: list[tuple[Path, float | None, float | None]], folder: Path, run: Any,
              remote: Any, gate: HostGate) -> None:
    """Run the child until it succeeds, retrying a rate-limited host with exponential backoff."""
    folder.mkdir(parents=True, exist_ok=True)
    job = {"url": url, "sections": [{"target": str(t), "start": s, "end": e} for t, s, e in jobs],
           "min_short_side": remote.min_short_side, "exact_cuts": remote.exact_cuts,
           "cookies": str(remote.cookies) if remote.cookies else None, "proxy": remote.proxy,
           "socket_timeout": run.download_timeout}
    for attempt in range(remote.retries + 1):
        with gate.slot(url):
            result = _run_child(job, folder, Limits.of(run), url)
        if result.get("ok"):
            return
        if result["reason"] != "rate_limited" or attempt == remote.retries:
            detail = result["detail"] + (f" (after {attempt + 1} tries)" if result["reason"] == "rate_limited" else "")
            raise MediaError(result["reason"], detail)
        gate.back_off(url, backoff_seconds(attempt, remote.backoff, remote.max_backoff))


def _run_child(job: dict[str, Any], folder: Path, limits: Limits, url: str) -> dict[str, Any]:
    """One child run under the deadline and the minimum rate (bytes the child writes under `folder`)."""
    work = folder / f".job-{os.getpid()}-{time.monotonic_ns()}"
    work.mkdir(parents=True)
    job_file, result_file = work / "job.json", work / "result.json"
    if job.get("cookies"):              # yt-dlp writes its cookie jar back: each child gets its own copy
        shutil.copyfile(job["cookies"], work / "cookies.txt")
        job = {**job, "cookies": str(work / "cookies.txt")}
    job_file.write_text(json.dumps(job))
    watch = RateWatch(url, limits)
    seen = _bytes_under(folder)
    with open(work / "stderr.txt", "wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "vividhead.pipelines.remote.ytdlp_child", str(job_file),
                                 str(result_file)], stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    try:
        while proc.poll() is None:
            time.sleep(0.2)
            size = _bytes_under(folder)
            watch.check(max(0, size - seen))
            seen = max(seen, size)
        if not result_file.exists():
            error = (work / "stderr.txt").read_text(errors="replace").strip().splitlines()
            return {"ok": False, "reason": "download_failed",
                    "detail": f"{url}: the yt-dlp child exited {proc.returncode}: {error[-1] if error else ''}"}
        return json.loads(result_file.read_text())
    except MediaError:
        _kill(proc)
        for part in folder.glob("*.download.*"):
            part.unlink(missing_ok=True)
        raise
    finally:
        if proc.poll() is None:
            _kill(proc)
        shutil.rmtree(work, ignore_errors=True)


def _bytes_under(folder: Path) -> int:
    total = 0
    for path in folder.iterdir():
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


def _kill(proc: subprocess.Popen) -> None:
    """End the child and its ffmpeg (one process group)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
