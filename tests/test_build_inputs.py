"""Bad and hostile inputs: each gets a reason in the manifest and the build goes on (exit 0).

The corpus is generated here with ffmpeg and the standard library from one talking take of the
demo generator: names with spaces, non-ASCII and non-UTF-8 bytes, a missing file, a text file
named .mp4, a truncated mp4, zero bytes, a duplicate under another name, audio-only, video-only,
variable frame rate, rotation metadata, 4K, 10-bit, yuv444, 8 kHz and 48 kHz 5.1 audio, one frame,
a symlink loop, and URLs from a local HTTP server on 127.0.0.1 that return 404, stall, serve a
huge file, or serve a real video. The model stages 8-11 are disabled: their decisions are not
under test here, and this keeps the test short.
"""

from __future__ import annotations

import http.server
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import run_vividhead
from vividhead.demo import Take, astronaut, write_take

CORE_STAGES = {"sources", "probe", "segment", "face", "flow", "visibility", "extract"}
NON_UTF8 = b"bad_\xff\xfe_name.mp4"


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-y", "-loglevel", "error", *map(str, args)], check=True, timeout=120)


def _x264(src: Path, dst: Path, *extra: str) -> None:
    _ffmpeg("-i", src, *extra, "-c:v", "libx264", "-preset", "ultrafast", dst)


class _Handler(http.server.BaseHTTPRequestHandler):
    video: bytes = b""

    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        if self.path == "/good.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(len(self.video)))
            self.end_headers()
            self.wfile.write(self.video)
        elif self.path == "/stall.mp4":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            self.wfile.write(b"\0" * 1000)
            self.wfile.flush()
            time.sleep(20)
        elif self.path == "/huge.mp4":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * 1024**3))
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * (1 << 20))
            except OSError:
                pass
        else:
            self.send_error(404, "not here")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hostile_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[dict]], str]:
    root = tmp_path_factory.mktemp("hostile")
    media = root / "media"
    media.mkdir()
    base = root / "base.mp4"
    write_take(Take("base", ((5.6, "front"),), 190.0, 2), base, astronaut())
    _x264(base, media / "my clip ü.mp4", "-crf", "30", "-c:a", "copy")
    (media / "notes.mp4").write_text("this is not a video\n")
    data = (media / "my clip ü.mp4").read_bytes()
    (media / "truncated.mp4").write_bytes(data[: len(data) * 2 // 5])
    (media / "empty.mp4").write_bytes(b"")
    shutil.copy(media / "my clip ü.mp4", media / "same bytes other name.mp4")
    _ffmpeg("-i", base, "-vn", "-c:a", "aac", media / "audio_only.mp4")
    _x264(base, media / "video_only.mp4", "-an")
    _x264(base, media / "vfr.mp4", "-vf", "setpts='(N+0.45*mod(N\\,2))/25/TB'", "-fps_mode", "passthrough",
          "-enc_time_base", "1/1000", "-video_track_timescale", "1000", "-c:a", "copy")
    _x264(base, root / "transposed.mp4", "-vf", "transpose=1", "-c:a", "copy")
    _ffmpeg("-i", root / "transposed.mp4", "-c", "copy", "-metadata:s:v:0", "rotate=90", media / "rotated.mp4")
    _x264(base, media / "uhd_4k.mp4", "-vf", "scale=3840:2160", "-c:a", "copy")
    _x264(base, media / "ten_bit.mp4", "-pix_fmt", "yuv420p10le", "-c:a", "copy")
    _x264(base, media / "yuv444.mp4", "-pix_fmt", "yuv444p", "-c:a", "copy")
    _x264(base, media / "audio_8k.mp4", "-c:a", "aac", "-ar", "8000", "-ac", "1")
    _x264(base, media / "audio_48k_51.mp4", "-c:a", "aac", "-ar", "48000", "-af", "aformat=channel_layouts=5.1")
    _x264(base, media / "one_frame.mp4", "-frames:v", "1", "-c:a", "copy")
    folder = root / "folder"
    folder.mkdir()
    _x264(base, root / "odd.mp4", "-crf", "33", "-c:a", "copy")
    os.rename(bytes(root / "odd.mp4"), bytes(folder) + b"/" + NON_UTF8)
    os.symlink(folder, folder / "loop")

    _Handler.video = base.read_bytes()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    files = sorted(p.name for p in media.iterdir())
    entries = [f"  - path: {str(media / name)!r}" for name in files]
    entries += [f"  - path: {str(media / 'missing.mp4')!r}", f"  - path: {str(folder)!r}"]
    entries += [f"  - url: {url}/{name}" for name in ("missing.mp4", "stall.mp4", "huge.mp4", "good.mp4")]
    sources = root / "sources.yaml"
    sources.write_text("sources:\n" + "\n".join(entries) + "\n", encoding="utf-8")
    config = root / "config.yaml"
    config.write_text("run:\n  download_timeout: 3\n  max_download_bytes: 100000000\n"
                      "occlusion: {enabled: false}\nspeech: {enabled: false}\nsync: {enabled: false}\n"
                      "annotate: {enabled: false}\n")
    out = root / "out"
    try:
        result = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    finally:
        server.shutdown()
    rows: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "manifest.parquet").to_pylist():
        rows.setdefault(row["uri"].rsplit("/", 1)[-1], []).append(row)
    return out, rows, result.stdout


def _one(rows: dict[str, list[dict]], name: str) -> dict:
    assert name in rows, f"{name} has no manifest row; rows: {sorted(rows)}"
    assert len(rows[name]) == 1, rows[name]
    return rows[name][0]


@pytest.mark.parametrize("name, stage, reason", [
    ("missing.mp4", "sources", "missing_file"),
    ("notes.mp4", "probe", "unreadable"),
    ("empty.mp4", "probe", "empty_file"),
    ("audio_only.mp4", "probe", "no_video"),
    ("video_only.mp4", "probe", "no_audio"),
    ("one_frame.mp4", "segment", "too_short"),
    ("stall.mp4", "sources", "download_stalled"),
    ("huge.mp4", "sources", "download_too_large"),
])
def test_each_bad_input_gets_its_reason(hostile_build, name: str, stage: str, reason: str) -> None:
    _, rows, _ = hostile_build
    row = _one(rows, name) if name != "missing.mp4" else next(r for r in rows[name] if r["reject_stage"] == stage)
    assert (row["status"], row["reject_stage"], row["reject_reason"]) == ("rejected", stage, reason), row["reject_detail"]
    assert row["reject_detail"]


def test_missing_url_and_truncated_file(hostile_build) -> None:
    _, rows, _ = hostile_build
    reasons = {(r["reject_stage"], r["reject_reason"]) for r in rows["missing.mp4"]}
    assert reasons == {("sources", "missing_file"), ("sources", "download_failed")}
    url_row = next(r for r in rows["missing.mp4"] if r["reject_reason"] == "download_failed")
    assert "404" in url_row["reject_detail"]
    truncated = _one(rows, "truncated.mp4")
    assert truncated["status"] == "rejected" and truncated["reject_reason"] in {"unreadable", "undecodable", "too_short"}


def test_duplicate_bytes_are_skipped(hostile_build) -> None:
    _, rows, _ = hostile_build
    original, duplicate = _one(rows, "my clip ü.mp4"), _one(rows, "same bytes other name.mp4")
    assert original["md5"] == duplicate["md5"]
    assert (duplicate["status"], duplicate["reject_reason"]) == ("skipped", "duplicate_md5")
    assert original["status"] == "kept"                          # spaces and non-ASCII in the path work


@pytest.mark.parametrize("name, check", [
    ("vfr.mp4", lambda r: r["probe.vfr"] is True),
    ("rotated.mp4", lambda r: r["probe.rotation"] == 90 and (r["probe.width"], r["probe.height"]) == (960, 540)),
    ("uhd_4k.mp4", lambda r: (r["probe.width"], r["probe.height"]) == (3840, 2160)),
    ("ten_bit.mp4", lambda r: r["probe.pix_fmt"] == "yuv420p10le"),
    ("yuv444.mp4", lambda r: r["probe.pix_fmt"] == "yuv444p"),
    ("audio_8k.mp4", lambda r: r["probe.audio_rate"] == 8000),
    ("audio_48k_51.mp4", lambda r: (r["probe.audio_rate"], r["probe.audio_channels"]) == (48000, 6)),
    ("good.mp4", lambda r: r["uri"].startswith("http://127.0.0.1")),
])
def test_odd_but_valid_inputs_are_normalised_and_kept(hostile_build, name: str, check) -> None:
    _, rows, _ = hostile_build
    row = _one(rows, name)
    assert row["status"] == "kept", (row["reject_stage"], row["reject_reason"], row["reject_detail"])
    assert check(row)
    assert row["n_frames"] == round(row["duration"] * 25)


def test_non_utf8_name_and_symlink_loop(hostile_build) -> None:
    out, rows, stdout = hostile_build
    odd = [name for name in rows if name.startswith("bad_")]
    assert len(odd) == 1, "the non-UTF-8 file is listed once, although a symlink loop leads back to it"
    row = rows[odd[0]][0]
    assert row["status"] == "kept" and "\\xff" in row["uri"]
    statuses = pq.read_table(out / "manifest.parquet").column("status").to_pylist()
    assert "failed" not in statuses
    assert "manifest:" in stdout and "kept:" in stdout
