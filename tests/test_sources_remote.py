"""Remote sources, offline: yt-dlp itself (generic extractor) and plain URLs against a local HTTP server with
Range support serving real mp4s from ../shared/media.

Shows: a range-only download fetches fewer bytes than the file; a re-run fetches nothing; 404, 403,
429-then-ok and 429-forever each give their reason; the per-host limit holds; a trickling server
ends at the deadline or the minimum rate; and a build from an HDTF-format list keeps only the listed
ranges, with the dead link as its own reason in the manifest.
"""

from __future__ import annotations

import http.server
import json
import re
import socket
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyarrow.parquet as pq
import pytest

from conftest import run_vividhead
from vividhead.media import MediaError, probe
from vividhead.pipelines.records import Source
from vividhead.pipelines.remote.hosts import HostGate
from vividhead.pipelines.remote.http import Limits, download, fetch_file
from vividhead.pipelines.remote.ytdlp import fetch_video
from vividhead.pipelines.remote.ytdlp_child import choose_format, classify


class _Server(http.server.BaseHTTPRequestHandler):
    """Paths: /v/NAME (a file, Range supported), /404/..., /403/..., /429once/NAME (429, then the file),
    /429/... (always 429), /slow/NAME (each request takes 0.3 s), /trickle/N (a byte every N ms, forever)."""

    files: dict[str, bytes] = {}
    sent = 0
    requests = 0
    active = 0
    most_active = 0
    seen_429: set[str] = set()
    lock = threading.Lock()
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        with self.lock:
            _Server.requests += 1
            _Server.active += 1
            _Server.most_active = max(_Server.most_active, _Server.active)
        try:
            self._serve(body=True)
        finally:
            with self.lock:
                _Server.active -= 1

    def _serve(self, body: bool) -> None:
        kind, _, name = self.path.lstrip("/").split("?")[0].partition("/")
        if kind in ("404", "403", "429") or (kind == "429once" and self.path not in self.seen_429):
            self.seen_429.add(self.path)
            code = 429 if kind.startswith("429") else int(kind)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if kind == "trickle":
            return self._trickle(int(name) / 1000)
        if kind == "slow":
            time.sleep(0.3)
        data = self.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start, end = 0, len(data) - 1
        match = re.match(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if match:
            start = int(match.group(1) or 0)
            end = min(end, int(match.group(2))) if match.group(2) else end
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)   # count what really left
            try:
                for at in range(start, end + 1, 16384):
                    chunk = data[at: min(end + 1, at + 16384)]
                    self.wfile.write(chunk)
                    with self.lock:
                        _Server.sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def _trickle(self, every: float) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Length", str(10 ** 9))
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"\0")
                self.wfile.flush()
                time.sleep(every)
        except (BrokenPipeError, ConnectionResetError):
            pass


@pytest.fixture(scope="module")
def server(media_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The server, serving `long.mp4` (a real interview clip looped to 30 s, moov first) and `face.mp4`."""
    folder = tmp_path_factory.mktemp("served")
    face = media_dir / "video" / "videoretalking_face1.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "4", "-i", str(face), "-c", "copy",
                    "-movflags", "+faststart", str(folder / "long.mp4")], check=True)
    _Server.files = {"long.mp4": (folder / "long.mp4").read_bytes(), "face.mp4": face.read_bytes()}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Server)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _settings(**run):
    """The `run` and `remote` sections a test needs (fast backoff, no spacing)."""
    run_cfg = SimpleNamespace(download_timeout=5.0, download_deadline=60.0, download_min_rate=0.0,
                              download_rate_window=30.0, max_download_bytes=10 ** 9)
    remote = SimpleNamespace(min_short_side=512, exact_cuts=True, sections=True, per_host=2, spacing=0.0, retries=2,
                             backoff=0.05, max_backoff=0.2, cookies=None, proxy=None)
    for key, value in run.items():
        setattr(remote if hasattr(remote, key) else run_cfg, key, value)
    return run_cfg, remote


def _video(url: str, *ranges: tuple[float, float]) -> Source:
    return Source(f"t:{url}", url, "t", tuple(ranges), kind="video")


def test_a_range_only_download_fetches_less_and_a_rerun_nothing(server, tmp_path):
    run, remote = _settings()
    source = _video(f"{server}/v/long.mp4", (2.0, 5.0), (20.0, 23.5))
    before = _Server.sent
    pieces = fetch_video(source, tmp_path, run, remote)
    fetched = _Server.sent - before
    assert fetched < len(_Server.files["long.mp4"]), (fetched, len(_Server.files["long.mp4"]))   # 6.5 of 30 s
    (first, path), (second, _) = pieces
    assert first.uri.endswith("#t=2,5") and first.ranges == ((0.0, 3.0),) and dict(first.fetched)["offset"] == 2.0
    assert dict(second.fetched)["offset"] == 20.0 and second.ranges == ((0.0, 3.5),)
    assert abs(probe(str(path)).duration - 3.0) < 0.2
    assert dict(first.fetched)["format_id"] and dict(first.fetched)["resolution"] == "unknown"

    requests = _Server.requests
    again = fetch_video(source, tmp_path, run, remote)                  # the section cache: nothing is fetched
    assert _Server.requests == requests and [p for _, p in again] == [p for _, p in pieces]


@pytest.mark.parametrize("path, reason", [("404/gone.mp4", "removed_or_private"), ("403/x.mp4", "forbidden"),
                                          ("429/x.mp4", "rate_limited")])
def test_a_dead_or_refusing_link_gets_its_reason(server, tmp_path, path, reason):
    run, remote = _settings()
    [(piece, found)] = fetch_video(_video(f"{server}/{path}", (0.0, 2.0)), tmp_path, run, remote)
    assert isinstance(found, MediaError) and found.reason == reason, found
    if reason == "rate_limited":
        assert "after 3 tries" in found.detail


def test_a_429_slows_down_and_then_succeeds(server, tmp_path):
    run, remote = _settings()
    [(piece, found)] = fetch_video(_video(f"{server}/429once/face.mp4", (1.0, 3.0)), tmp_path, run, remote)
    assert isinstance(found, Path) and found.is_file()
    assert json.loads((tmp_path / ".hosts").joinpath(
        next(p.name for p in (tmp_path / ".hosts").iterdir() if p.name.endswith(".backoff"))).read_text()) > 0


def test_the_per_host_limit_holds(server, tmp_path):
    gate = HostGate(tmp_path / "hosts", per_host=2, spacing=0.0)
    limits = Limits(5.0, 30.0, 0.0, 30.0, 10 ** 9)
    _Server.most_active = 0
    threads = [threading.Thread(target=fetch_file, args=(f"{server}/slow/face.mp4?{i}", tmp_path / str(i), limits, gate))
               for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert _Server.most_active == 2
    assert all(len(list((tmp_path / str(i)).glob("*.mp4"))) == 1 for i in range(6))


def test_a_trickle_ends_at_the_minimum_rate_or_the_deadline(server, tmp_path):
    slow = Limits(read_timeout=5.0, deadline=60.0, min_rate=100.0, rate_window=0.5, max_bytes=10 ** 9)
    with pytest.raises(MediaError) as err:
        download(f"{server}/trickle/100", tmp_path / "a.part", slow)
    assert err.value.reason == "download_too_slow"
    late = Limits(read_timeout=5.0, deadline=0.6, min_rate=0.0, rate_window=30.0, max_bytes=10 ** 9)
    with pytest.raises(MediaError) as err:
        download(f"{server}/trickle/100", tmp_path / "b.part", late)
    assert err.value.reason == "download_deadline"


def test_a_trickling_video_site_is_ended_by_its_deadline(server, tmp_path):
    run, remote = _settings(download_deadline=1.5)
    started = time.monotonic()
    [(_, found)] = fetch_video(_video(f"{server}/trickle/50"), tmp_path, run, remote)
    assert isinstance(found, MediaError) and found.reason == "download_deadline", found
    assert time.monotonic() - started < 30                   # the child was killed, not waited for


def test_format_choice_and_reasons():
    formats = [{"format_id": "160", "width": 256, "height": 144, "vcodec": "avc1", "acodec": "none", "tbr": 100},
               {"format_id": "135", "width": 854, "height": 480, "vcodec": "avc1", "acodec": "none", "tbr": 500},
               {"format_id": "136", "width": 1280, "height": 720, "vcodec": "avc1", "acodec": "none", "tbr": 1000},
               {"format_id": "137", "width": 1920, "height": 1080, "vcodec": "avc1", "acodec": "none", "tbr": 3000},
               {"format_id": "140", "vcodec": "none", "acodec": "mp4a", "abr": 128},
               {"format_id": "251", "vcodec": "none", "acodec": "opus", "abr": 160}]
    chosen, _ = choose_format(formats, 512)
    assert chosen == {"format_id": "136+251", "resolution": "1280x720", "vcodec": "avc1", "acodec": "opus"}
    assert choose_format(formats[:2], 512)[0] is None
    assert classify("ERROR: [youtube] x: Sign in to confirm you're not a bot. Use --cookies") == "sign_in_required"
    assert classify("ERROR: [youtube] x: Private video. Sign in if you've been granted access") == "removed_or_private"
    assert classify("ERROR: [youtube] x: Video unavailable. This video has been removed by the uploader") == \
        "removed_or_private"
    assert classify("ERROR: The uploader has not made this video available in your country") == "geo_blocked"


def test_a_build_from_an_hdtf_list_keeps_only_the_listed_ranges(server, tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "RD_video_url.txt").write_text(f"Good {server}/v/long.mp4\nGone {server}/404/gone.mp4\n")
    (lists / "RD_annotion_time.txt").write_text("Good.mp4 00:00-00:05 00:13-00:18 \nGone.mp4 00:00-00:05\n")
    (lists / "RD_crop_wh.txt").write_text("Good_0.mp4 100 500 100 500\nGood_1.mp4 0 40 0 40\n")   # 1: no face there
    (tmp_path / "sources.yaml").write_text("sources:\n  - list: {format: hdtf, path: lists}\n")
    (tmp_path / "config.yaml").write_text("segment: {min_seconds: 2}\nremote: {spacing: 0, retries: 0}\n"
                                          "occlusion: {enabled: false}\nspeech: {enabled: false}\n"
                                          "sync: {enabled: false}\nannotate: {enabled: false}\n")
    run_vividhead("build", "--sources", tmp_path / "sources.yaml", "--config", tmp_path / "config.yaml",
                  "--out", tmp_path / "out", "--no-progress", "--workers", "2")
    rows = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    gone = [r for r in rows if "gone" in r["uri"]]
    assert [(r["reject_stage"], r["reject_reason"]) for r in gone] == [("sources", "removed_or_private")]
    good = [r for r in rows if "long.mp4" in r["uri"]]
    assert {r["uri"].rsplit("#", 1)[1] for r in good} <= {"t=0,5", "t=13,18"}
    kept = [r for r in good if r["status"] == "kept"]
    assert kept and all(r["uri"].endswith("#t=0,5") for r in kept), [(r["uri"], r["reject_reason"]) for r in good]
    assert {r["reject_reason"] for r in good if r["uri"].endswith("#t=13,18")} == {"listed_face_not_found"}
    for row in good:
        start = row["sources.offset"] + (row["start"] or 0)
        assert any(s - 0.05 <= start and start + (row["duration"] or 0) <= e + 0.05 for s, e in [(0, 5), (13, 18)])
        assert row["sources.format_id"] and row["sources.resolution"]
