"""Hostile inputs to every command: each ends in its exact one-line message and exit status, or its close reason,
and none hangs or writes outside where it was told.

Security (`stream --serve` tokens, `inspect --sample` keys), hangs (a `**` glob through symlink loops), slots held by
trickling clients, and the inputs that used to end in a traceback (huge images, `--out` a folder or /dev/full, bad
addresses, manifests that are not manifests, tars without samples). The CLI runs in-process through
`vividhead.cli.main`, the one handler that prints these lines.
"""

from __future__ import annotations

import asyncio
import errno
import io
import json
import socket
import struct
import subprocess
import sys
import tarfile
import time
import zlib
from pathlib import Path

import aiohttp
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stream_fixtures import face_like_image, tiny_engine, write_wav
from train_fixtures import write_config
from vividhead.cli import main
from vividhead.envfail import InputError, environment_message
from vividhead.inference.server import Access, BackgroundServer, ServerLimits, StreamServer, access_policy

REPO = Path(__file__).resolve().parents[1]


def _cli(capsys: pytest.CaptureFixture, *args: str | Path) -> tuple[int, str]:
    """Exit status and the whole of stderr of `vividhead ARGS`."""
    status = main([str(arg) for arg in args])
    return status, capsys.readouterr().err


def _declared_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose header declares width x height (an empty image body: it must never be decoded)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def face(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import cv2

    path = tmp_path_factory.mktemp("image") / "face.png"
    cv2.imwrite(str(path), face_like_image(64))
    return path


# ------------------------------------------------------------------------------------------ security
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
@pytest.mark.parametrize("token", ["", "   "])
def test_an_empty_or_blank_token_is_refused_at_start(capsys, face, tmp_path, host, token):
    status, err = _cli(capsys, "stream", "--weights", tmp_path / "none", "--image", face, "--serve", "--host", host,
                       "--token", token)
    assert (status, err) == (2, "vividhead stream: error: --token is empty: give a non-empty token, or leave --token "
                                "out for a random one\n")
    with pytest.raises(InputError):
        Access(token="\t")


def _tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_sample_keys_and_member_names_never_leave_out(capsys, tmp_path):
    outside = tmp_path / "outside"
    shard = _tar(tmp_path / "evil.tar", {"../../outside/x.mp4": b"x", f"{outside}/abs.mp4": b"y",
                                         "good.mp4": b"g", "good.json": b"{}"})
    out = tmp_path / "a" / "b" / "out"
    status, err = _cli(capsys, "inspect", shard, "--sample", "../../outside/x", "--out", out)
    assert (status, err) == (2, "vividhead inspect: error: sample key '../../outside/x' is not a plain file name; "
                                f"refusing to write outside --out {out}\n")
    status, err = _cli(capsys, "inspect", shard, "--sample", f"{outside}/abs", "--out", out)
    assert status == 2 and err == (f"vividhead inspect: error: sample key '{outside}/abs' is not a plain file name; "
                                   f"refusing to write outside --out {out}\n")
    assert not outside.exists() and not out.exists()
    status, _ = _cli(capsys, "inspect", shard, "--sample", "good", "--out", out)
    assert status == 0 and sorted(p.name for p in out.iterdir()) == ["good.json", "good.mp4"]
    status, err = _cli(capsys, "inspect", shard, "--sample", "good", "--out", out / "good.mp4")
    assert (status, err) == (1, f"vividhead inspect: error: --out {out / 'good.mp4'} is a file, not a directory\n")


# --------------------------------------------------------------------------------------------- hangs
def test_a_recursive_glob_through_symlink_loops_ends(tmp_path):
    """Two loop links make the standard glob list 2^depth paths until the path length limit: hours."""
    (tmp_path / "videos" / "deep").mkdir(parents=True)
    (tmp_path / "videos" / "a.mp4").write_bytes(b"a")
    (tmp_path / "videos" / "deep" / "b.mp4").write_bytes(b"b")
    (tmp_path / "videos" / "deep" / "up").symlink_to("..")
    (tmp_path / "videos" / "deep" / "top").symlink_to(tmp_path)
    (tmp_path / "sources.yaml").write_text("sources:\n  - path: videos/**/*.mp4\n")
    script = ("import sys; from pathlib import Path; from vividhead.configfile import load_yaml_model; "
              "from vividhead.pipelines.config import SourcesFile; from vividhead.pipelines.sources import expand_sources; "
              "sources, missing = expand_sources(load_yaml_model(SourcesFile, Path(sys.argv[1])), Path(sys.argv[1]).parent); "
              "print([Path(s.uri).relative_to(Path(sys.argv[1]).parent).as_posix() for s in sources], missing)")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sources.yaml")], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['videos/a.mp4', 'videos/deep/b.mp4'] []"


# ------------------------------------------------------------------------------------ trickled slots
@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("tiny"))


def test_trickling_clients_lose_their_slots_to_a_fifth(engine):
    """Four clients each send 2 bytes of audio every 0.2 s (never idle, far under 1000 B/s): each is closed as
    too_slow about a second later, and a fifth client, first told `busy`, gets a session."""
    limits = ServerLimits(max_sessions=4, idle_seconds=1.0, min_audio_bytes_per_second=1000)
    background = BackgroundServer(StreamServer(engine, engine.reference(face_like_image()), limits))

    async def trickle(http: aiohttp.ClientSession) -> tuple[str, str, int | None]:
        ws = await http.ws_connect(f"{background.url}/ws")
        assert (await ws.receive_json())["type"] == "ready"
        while True:
            try:
                message = await ws.receive(timeout=0.2)
            except asyncio.TimeoutError:
                await ws.send_bytes(b"\x00\x00")
                continue
            if message.type == aiohttp.WSMsgType.TEXT:
                reply = json.loads(message.data)
                end = await ws.receive(timeout=10)
                return reply["code"], reply["message"], (end.type == aiohttp.WSMsgType.CLOSE) and ws.close_code

    async def fifth(http: aiohttp.ClientSession) -> tuple[str, list[str]]:
        await asyncio.sleep(0.3)                                        # the four hold every slot by now
        replies = []
        for _ in range(100):
            ws = await http.ws_connect(f"{background.url}/ws")
            replies.append((await ws.receive_json())["type"])
            await ws.close()
            if replies[-1] == "ready":
                break
            await asyncio.sleep(0.2)
        return replies[0], replies[-1]

    async def run():
        async with aiohttp.ClientSession() as http:
            return await asyncio.wait_for(asyncio.gather(*(trickle(http) for _ in range(4)), fifth(http)), 60)

    try:
        *trickled, (first, last) = asyncio.run(run())
    finally:
        background.stop()
    assert trickled == [("too_slow", "audio arrived at under 1000 bytes/s (the least rate) for 1 s; session closed",
                         1008)] * 4
    assert (first, last) == ("error", "ready")                     # busy at first, then a slot


def test_without_the_right_token_a_websocket_never_gets_ready(engine):
    access = access_policy("127.0.0.1", token="s3cret")
    background = BackgroundServer(StreamServer(engine, engine.reference(face_like_image()), access=access))

    async def handshake(query: str) -> int | str:
        async with aiohttp.ClientSession() as http:
            try:
                async with http.ws_connect(f"{background.url}/ws{query}") as ws:
                    return (await ws.receive_json())["type"]
            except aiohttp.WSServerHandshakeError as err:
                return err.status

    try:
        assert [asyncio.run(handshake(q)) for q in ("", "?token=", "?token=%20", "?token=s3cre", "?token=s3cret")] \
            == [403, 403, 403, 403, "ready"]
    finally:
        background.stop()


# ------------------------------------------------------------------------------ one line, not a traceback
@pytest.mark.parametrize("size, line", [
    ((100_000, 100_000), "declares more than 178,956,970 pixels, far over the limit (--max-image-pixels)"),
    ((16_384, 16_384), "declares more than 178,956,970 pixels, far over the limit (--max-image-pixels)"),
    ((10_000, 6_000), "10000x6000 is 60,000,000 pixels, over the limit of 50,000,000 (--max-image-pixels)"),
], ids=["100000x100000", "16384x16384", "60-megapixels"])
def test_an_image_over_the_pixel_limit_is_refused_before_decoding(capsys, tmp_path, size, line):
    image = _declared_png(tmp_path / "big.png", *size)
    status, err = _cli(capsys, "stream", "--weights", tmp_path, "--image", image, "--audio", "a.wav", "--out", "o.mp4")
    assert (status, err) == (2, f"vividhead stream: error: reference image {image}: {line}\n")


def test_the_pixel_limit_is_a_setting(capsys, tmp_path, face):
    status, err = _cli(capsys, "stream", "--weights", tmp_path, "--image", face, "--max-image-pixels", "4000",
                       "--audio", "a.wav", "--out", "o.mp4")
    assert (status, err) == (2, f"vividhead stream: error: reference image {face}: 64x64 is 4,096 pixels, over the "
                                "limit of 4,000 (--max-image-pixels)\n")


def test_stream_out_a_folder_or_a_full_disk(capsys, tmp_path, face):
    weights = tmp_path / "weights"
    tiny_engine(weights)
    wav = write_wav(tmp_path / "a.wav", 0.5)
    status, err = _cli(capsys, "stream", "--weights", weights, "--variant", "tiny", "--image", face, "--audio", wav,
                       "--out", tmp_path)
    assert (status, err) == (2, f"vividhead stream: error: --out {tmp_path} is a folder; give the path of an .mp4 "
                                "file to write, or '-'\n")
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full on this system")
    status, err = _cli(capsys, "stream", "--weights", weights, "--variant", "tiny", "--image", face, "--audio", wav,
                       "--out", "/dev/full", "--steps", "1")
    assert (status, err) == (1, "vividhead stream: error: /dev/full: no space left on the device\n")


def test_a_disk_full_line_names_the_output_when_the_os_error_names_no_path():
    full = OSError(errno.ENOSPC, "No space left on device")           # a write() to an open file: no filename
    assert environment_message(full, where="/data/out") == "/data/out: no space left on the device"
    assert environment_message(OSError(errno.ENOSPC, "x", "/data/out/a.tar"), where="/data/out") \
        == "/data/out/a.tar: no space left on the device"


def test_serve_on_a_bad_address_is_one_line(capsys, face, tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    serve = ("stream", "--weights", tmp_path / "none", "--image", face, "--serve")
    try:
        assert _cli(capsys, *serve, "--port", port) == (
            1, f"vividhead stream: error: cannot listen on 127.0.0.1:{port}: the port is in use (another server, or "
               "another `vividhead stream --serve`?)\n")
    finally:
        taken.close()
    assert _cli(capsys, *serve, "--port", 99999) == (2, "vividhead stream: error: --port 99999: a TCP port is 0..65535\n")
    assert _cli(capsys, *serve, "--host", "192.0.2.1") == (       # TEST-NET-1: never an address of this machine
        2, "vividhead stream: error: --host 192.0.2.1: not an address of this machine\n")


@pytest.mark.parametrize("columns, problem", [
    ({"a": [1, 2, 3], "b": ["x", "y", "z"]}, "missing column(s) key, status (it has a, b)"),
    ({"key": [1, 2, 3], "status": ["kept"] * 3, "duration": ["1.5", "2", "x"], "sync.verified": ["yes"] * 3},
     "key is int64, expected string; duration is string, expected double; sync.verified is string, expected bool"),
], ids=["not-a-manifest", "wrong-types"])
def test_inspect_names_the_missing_and_wrong_columns(capsys, tmp_path, columns, problem):
    path = tmp_path / "table.parquet"
    pq.write_table(pa.table(columns), path)
    for extra in ((), ("--json",), ("--sample", "k", "--out", tmp_path / "o")):
        assert _cli(capsys, "inspect", path, *extra) == (
            2, f"vividhead inspect: error: {path.resolve()}: not a vividhead manifest: {problem}\n")


def _train(capsys, tmp_path: Path, shard: Path, out: Path) -> tuple[int, str]:
    config = write_config(tmp_path / "train.yaml", shard, out, steps=1)
    return _cli(capsys, "train", "--config", config, "--no-progress")


def test_train_on_a_tar_without_samples_or_out_a_file(capsys, tmp_path):
    junk = _tar(tmp_path / "junk.tar", {"readme.txt": b"hello"})
    empty = _tar(tmp_path / "empty.tar", {})
    assert _train(capsys, tmp_path, junk, tmp_path / "run") == (
        2, f"vividhead train: error: {junk}: sample `readme` lacks mp4, audio.npy (expected by training; is this a "
           "`vividhead build` shard?)\n")
    assert _train(capsys, tmp_path, empty, tmp_path / "run") == (
        2, "vividhead train: error: no samples in the 1 shard file(s) of data.shards\n")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    assert _train(capsys, tmp_path, junk, taken) == (
        1, f"vividhead train: error: --out {taken} is a file, not a directory\n")


def test_a_checkpoint_that_streams_non_finite_frames_leaves_no_video(capsys, tmp_path, face):
    import torch

    from vividhead.models.release import save_release

    engine = tiny_engine(tmp_path / "weights")
    with torch.no_grad():
        engine.model.head.head.weight.fill_(3e38)                      # finite weights whose output overflows
    save_release(engine.model, tmp_path / "weights" / "Model_Tiny")
    out = tmp_path / "out.mp4"
    status, err = _cli(capsys, "stream", "--weights", tmp_path / "weights", "--variant", "tiny", "--image", face,
                       "--audio", write_wav(tmp_path / "a.wav", 0.5), "--out", out, "--steps", "1")
    assert (status, err) == (2, "vividhead stream: error: chunk 0: the sampled latents hold NaN or infinite values; stopping "
                                "the stream; no output written (check the checkpoint)\n")
    assert not out.exists()
