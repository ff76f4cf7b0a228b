"""Bytes and seconds of fetching listed ranges with yt-dlp's download-sections, against the whole video.

A local HTTP server with Range support serves a real clip looped to `--seconds` (moov first, as a
video site's progressive mp4); yt-dlp reaches it through its generic extractor. Printed: the bytes the
server sent and the wall time for (a) the whole video, (b) `--ranges` sections of `--section` seconds
with exact cuts, (c) the same with keyframe cuts, and (d) a re-run of (b) from the section cache.

    .venv/bin/python benchmarks/fetch_sections.py --media ../shared/media/video/videoretalking_face1.mp4
"""

from __future__ import annotations

import argparse
import http.server
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from vividhead.pipelines.records import Source
from vividhead.pipelines.remote.ytdlp import fetch_video


class _Handler(http.server.BaseHTTPRequestHandler):
    data = b""
    sent = 0
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        start, end = 0, len(self.data) - 1
        match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1) or 0)
            end = min(end, int(match.group(2))) if match.group(2) else end
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(self.data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        try:
            for at in range(start, end + 1, 16384):
                chunk = self.data[at: min(end + 1, at + 16384)]
                self.wfile.write(chunk)
                _Handler.sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass


def _fetch(url: str, ranges: list[tuple[float, float]], folder: Path, sections: bool, exact: bool) -> tuple[int, float]:
    run = SimpleNamespace(download_timeout=30.0, download_deadline=600.0, download_min_rate=0.0,
                          download_rate_window=30.0, max_download_bytes=10 ** 10)
    remote = SimpleNamespace(min_short_side=512, exact_cuts=exact, sections=sections, per_host=2, spacing=0.0,
                             retries=0, backoff=1.0, max_backoff=1.0, cookies=None, proxy=None)
    before, started = _Handler.sent, time.perf_counter()
    pieces = fetch_video(Source(f"b:{url}", url, "b", tuple(ranges), kind="video"), folder, run, remote)
    failed = [found for _, found in pieces if not isinstance(found, Path)]
    if failed:
        raise SystemExit(f"fetch failed: {failed[0]}")
    return _Handler.sent - before, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--media", type=Path, default=Path("../shared/media/video/videoretalking_face1.mp4"))
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the served video")
    parser.add_argument("--ranges", type=int, default=3, help="sections to fetch")
    parser.add_argument("--section", type=float, default=5.0, help="seconds per section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        served = folder / "served.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "-1", "-t", str(args.seconds), "-i",
                        str(args.media), "-c", "copy", "-movflags", "+faststart", str(served)], check=True)
        _Handler.data = served.read_bytes()
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        httpd.daemon_threads = True
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/served.mp4"
        step = args.seconds / args.ranges
        ranges = [(round(i * step + 1, 3), round(i * step + 1 + args.section, 3)) for i in range(args.ranges)]
        print(f"served: {len(_Handler.data)} bytes, {args.seconds:g} s; ranges: {ranges}")
        rows = [("whole video", *_fetch(url, ranges, folder / "whole", False, True)),
                ("sections, exact cuts", *_fetch(url, ranges, folder / "exact", True, True)),
                ("sections, keyframe cuts", *_fetch(url, ranges, folder / "keyframes", True, False)),
                ("re-run of exact (cache)", *_fetch(url, ranges, folder / "exact", True, True))]
        httpd.shutdown()
    for name, sent, seconds in rows:
        print(f"{name:<26} {sent:>11} bytes  {sent / len(_Handler.data):6.1%} of the file  {seconds:6.2f} s")


if __name__ == "__main__":
    main()
