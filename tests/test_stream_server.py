"""The local stream server with a real aiohttp client: concurrent sessions, bad messages, limits, freeing a
session on disconnect; origin, host and token checks; bounded upload memory; idle and slow clients closed;
shared (batched) generation that leaves each session's frames as they are alone; a non-finite chunk stops
the stream."""

from __future__ import annotations

import asyncio
import base64
import gc
import json
import os
import socket
import struct
import threading
import time
import weakref
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import soundfile
import torch

from stream_fixtures import face_like_image, tiny_engine, write_wav
from vividhead.inference.batcher import Batcher
from vividhead.inference.server import BackgroundServer, ServerLimits, StreamServer, access_policy, page_url

pytestmark = pytest.mark.usefixtures("one_thread")   # tiny models on a shared 2-core CPU


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    return tiny_engine(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def server(engine):
    limits = ServerLimits(max_message_bytes=64 * 1024, messages_per_second=200, burst=200, max_sessions=3)
    background = BackgroundServer(StreamServer(engine, engine.reference(face_like_image()), limits))
    yield background
    background.stop()


async def _collect(ws) -> tuple[list[dict], list[bytes]]:
    texts, blobs = [], []
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            blobs.append(msg.data)
        else:
            texts.append(json.loads(msg.data))
            if texts[-1]["type"] == "done":
                break
    return texts, blobs


async def _pcm_session(url: str) -> tuple[list[dict], list[bytes]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws") as ws:
        ready = await ws.receive_json()
        assert ready["type"] == "ready" and ready["mime"].startswith('video/mp4; codecs="avc1.')
        await ws.send_str("{not json")                                    # malformed
        await ws.send_str(json.dumps({"type": "dance"}))                  # unknown type
        await ws.send_bytes(b"\x01\x02\x03")                              # odd length for s16
        await ws.send_bytes(b"\x00" * (64 * 1024 + 2))                    # over the message limit
        pcm = (np.sin(np.arange(16000 * 2) / 16000 * 2 * np.pi * 200) * 8000).astype("<i2").tobytes()
        for start in range(0, len(pcm), 6400):                            # 0.2 s pieces
            await ws.send_bytes(pcm[start: start + 6400])
        await ws.send_str(json.dumps({"type": "end"}))
        return await _collect(ws)


async def _upload_session(url: str, wav: bytes) -> tuple[list[dict], list[bytes]]:
    async with aiohttp.ClientSession() as http, http.ws_connect(f"{url}/ws") as ws:
        assert (await ws.receive_json())["type"] == "ready"
        await ws.send_str(json.dumps({"type": "upload", "size": len(wav), "name": "a.wav"}))
        for start in range(0, len(wav), 32 * 1024):
            await ws.send_bytes(wav[start: start + 32 * 1024])
        return await _collect(ws)


def test_two_concurrent_sessions_and_bad_messages(server, tmp_path):
    wav = write_wav(tmp_path / "a.wav", 1.6).read_bytes()

    async def both():
        return await asyncio.gather(_pcm_session(server.url), _upload_session(server.url, wav))

    (pcm_texts, pcm_blobs), (up_texts, up_blobs) = asyncio.run(both())
    errors = [t["code"] for t in pcm_texts if t["type"] == "error"]
    assert errors == ["malformed", "unknown_type", "bad_pcm", "too_large"]
    for texts, blobs, seconds in ((pcm_texts, pcm_blobs, 2.0), (up_texts, up_blobs, 1.6)):
        chunks = [t for t in texts if t["type"] == "chunk"]
        assert chunks and texts[-1]["type"] == "done"
        assert sum(c["frames"] for c in chunks) == int(np.ceil(seconds * 25))    # all the audio, no more
        assert chunks[0]["frames"] == 28 and all(c["latency_ms"] > 0 for c in chunks)
        assert b"ftyp" in blobs[0][:16] and b"moov" in blobs[0]                # init segment first
        assert all(blob[4:8] == b"moof" for blob in blobs[1:]) and len(blobs) == len(chunks) + 1
    assert not [t for t in up_texts if t["type"] == "error"]


def test_disconnect_frees_the_session(server):
    async def connect_and_drop():
        async with aiohttp.ClientSession() as http:
            ws = await http.ws_connect(f"{server.url}/ws")
            await ws.receive_json()
            await ws.send_bytes((np.zeros(16000 * 2, "<i2")).tobytes()[:60000])
            await asyncio.sleep(0.3)
            sessions = [weakref.ref(c.session) for c in server.server.connections.values() if c.session is not None]
            await ws.close()
            for _ in range(100):
                async with http.get(f"{server.url}/api/health") as response:
                    if (await response.json())["sessions"] == 0:
                        break
                await asyncio.sleep(0.1)
            return sessions

    refs = asyncio.run(connect_and_drop())
    assert refs and not server.server.connections
    gc.collect()
    assert all(ref() is None for ref in refs)


def test_message_rate_is_bounded(engine):
    limits = ServerLimits(messages_per_second=5, burst=5)
    background = BackgroundServer(StreamServer(engine, engine.reference(face_like_image()), limits))

    async def flood():
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{background.url}/ws") as ws:
            await ws.receive_json()
            for _ in range(12):
                await ws.send_str(json.dumps({"type": "start", "format": "s16"}))
            codes = [(await ws.receive_json())["code"] for _ in range(7)]
            await asyncio.sleep(0.5)                                      # tokens refill: the session goes on
            await ws.send_str(json.dumps({"type": "dance"}))
            return codes, (await ws.receive_json())["code"]

    try:
        codes, after = asyncio.run(flood())
    finally:
        background.stop()
    assert codes == ["rate_limited"] * 7 and after == "unknown_type"


async def _fill(http: aiohttp.ClientSession, url: str, slots: int) -> tuple[list, dict]:
    """Open every slot, then one more: the open sockets and the extra one's reply."""
    sockets = [await http.ws_connect(f"{url}/ws") for _ in range(slots)]
    for ws in sockets:
        assert (await ws.receive_json())["type"] == "ready"
    extra = await http.ws_connect(f"{url}/ws")
    return sockets, await extra.receive_json()


def test_server_refuses_sessions_over_the_limit(server):
    async def many():
        async with aiohttp.ClientSession() as http:
            sockets, refused = await _fill(http, server.url, 3)
            for ws in sockets:
                await ws.close()
            return refused

    assert asyncio.run(many())["code"] == "busy"




# ------------------------------------------------------------------------------------ access
async def _handshake(url: str, **kwargs) -> int | str:
    """The HTTP status of a refused WebSocket upgrade, or the type of the first message when accepted."""
    async with aiohttp.ClientSession() as http:
        try:
            async with http.ws_connect(url, **kwargs) as ws:
                return (await ws.receive_json())["type"]
        except aiohttp.WSServerHandshakeError as err:
            return err.status


def test_foreign_origin_is_refused_and_the_pages_own_origin_works(server, engine):
    own = server.url                                                       # http://127.0.0.1:PORT
    assert asyncio.run(_handshake(f"{own}/ws", origin="http://evil.example")) == 403
    assert asyncio.run(_handshake(f"{own}/ws", origin=own)) == "ready"
    assert asyncio.run(_handshake(f"{own}/ws")) == "ready"                # no Origin: not a browser page
    dns_rebound = {"Host": f"evil.example:{server.port}"}                  # evil.example resolving to 127.0.0.1
    assert asyncio.run(_handshake(f"{own}/ws", headers=dns_rebound, origin=f"http://evil.example:{server.port}")) == 403

    allowed = BackgroundServer(StreamServer(engine, server.server.reference,
                                            access=access_policy("127.0.0.1", allow_origins=["https://app.example/"])))
    try:
        assert asyncio.run(_handshake(f"{allowed.url}/ws", origin="https://app.example")) == "ready"
        assert asyncio.run(_handshake(f"{allowed.url}/ws", origin="https://other.example")) == 403
    finally:
        allowed.stop()


def test_a_non_loopback_bind_requires_the_token(engine, server):
    access = access_policy("0.0.0.0")
    assert access.token and not access.loopback
    background = BackgroundServer(StreamServer(engine, server.server.reference, access=access), host="0.0.0.0")
    url, token = background.url, access.token

    async def probe():
        async with aiohttp.ClientSession() as http:
            statuses = []
            for path in ("/", "/api/health", f"/?token={token}", f"/?token={token}x", "/static/app.js"):
                async with http.get(url + path) as response:
                    statuses.append(response.status)
            return statuses

    try:
        assert asyncio.run(probe()) == [403, 403, 200, 403, 200]
        assert asyncio.run(_handshake(f"{url}/ws")) == 403
        assert asyncio.run(_handshake(f"{url}/ws?token=wrong")) == 403
        assert asyncio.run(_handshake(f"{url}/ws?token={token}", origin=url)) == "ready"
        assert asyncio.run(_handshake(f"{url}/ws", headers={"Authorization": f"Bearer {token}"})) == "ready"
    finally:
        background.stop()
    assert page_url("0.0.0.0", 8765, access) == f"http://0.0.0.0:8765/?token={token}"
    assert access_policy("::", token="s3cret").token == "s3cret"
    assert page_url("::", 8765, access_policy("::", token="s3cret")) == "http://[::]:8765/?token=s3cret"
    assert page_url("::1", 8765, access_policy("::1")) == "http://[::1]:8765/"


# ------------------------------------------------------------------------------------ memory
def _memory_kib(field: str) -> int:
    line = next(li for li in Path("/proc/self/status").read_text().splitlines() if li.startswith(field + ":"))
    return int(line.split()[1])


def _hours_of_silence(path: Path, hours: float, declare_length: bool) -> bytes:
    """A small FLAC that decodes to `hours` of 8 kHz silence; without `declare_length` STREAMINFO says 'unknown'."""
    with soundfile.SoundFile(str(path), "w", samplerate=8000, channels=1, format="FLAC", subtype="PCM_16") as out:
        for _ in range(int(hours * 60)):
            out.write(np.zeros(8000 * 60, np.int16))
    data = bytearray(path.read_bytes())
    if not declare_length:                            # STREAMINFO total samples (36 bits) = 0: length unknown
        data[8 + 13] &= 0xF0
        data[8 + 14: 8 + 18] = bytes(4)
    return bytes(data)


@pytest.mark.parametrize("declare_length", [True, False], ids=["probed", "decoded-incrementally"])
def test_an_upload_of_hours_of_audio_is_capped_and_memory_stays_bounded(server, tmp_path, declare_length):
    """2 h of audio in a ~180 KB file would decode to 460 MB of float32 at 16 kHz; the server stops at its
    120 s cap (7.7 MB). Bound stated and checked: peak RSS during the upload <= 64 MiB above the RSS before."""
    upload = _hours_of_silence(tmp_path / "long.flac", 2.0, declare_length)
    assert len(upload) < 512 * 1024
    gc.collect()
    before = _memory_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")                          # reset the peak (VmHWM) to now

    async def send():
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{server.url}/ws") as ws:
            assert (await ws.receive_json())["type"] == "ready"
            await ws.send_str(json.dumps({"type": "upload", "size": len(upload), "name": "long.flac"}))
            for start in range(0, len(upload), 32 * 1024):
                await ws.send_bytes(upload[start: start + 32 * 1024])
            return await ws.receive_json()

    reply = asyncio.run(send())
    peak = _memory_kib("VmHWM")
    gc.collect()
    after = _memory_kib("VmRSS")
    print(f"RSS before {before / 1024:.0f} MiB, peak during {peak / 1024:.0f} MiB, after {after / 1024:.0f} MiB")
    assert reply["type"] == "error" and reply["code"] == "too_long"
    assert "the cap is 120 s" in reply["message"] or "more than 120 s of audio (the cap)" in reply["message"]
    assert (peak - before) < 64 * 1024
    assert (after - before) < 32 * 1024


# ------------------------------------------------------------------------------ idle and slow
def _health(url: str) -> dict:
    async def get():
        async with aiohttp.ClientSession() as http, http.get(f"{url}/api/health") as response:
            return await response.json()
    return asyncio.run(get())


def test_idle_connections_are_closed_and_their_slots_freed(engine, server):
    limits = ServerLimits(max_sessions=2, idle_seconds=1.0)
    background = BackgroundServer(StreamServer(engine, server.server.reference, limits))

    async def hold_idle():
        async with aiohttp.ClientSession() as http:
            sockets, refused = await _fill(http, background.url, 2)
            busy = refused["code"]
            started = time.monotonic()
            closed = []
            for ws in sockets:                                              # they only wait; they send nothing
                message = await ws.receive_json(timeout=10)
                end = await ws.receive(timeout=10)
                closed.append((message["code"], end.type, ws.close_code))
            waited = time.monotonic() - started
            for _ in range(50):
                async with http.get(f"{background.url}/api/health") as response:
                    if (await response.json())["sessions"] == 0:
                        break
                await asyncio.sleep(0.1)
            again = await http.ws_connect(f"{background.url}/ws")          # a slot is free again
            ready = (await again.receive_json())["type"]
            await again.close()
            return busy, closed, waited, ready

    try:
        busy, closed, waited, ready = asyncio.run(hold_idle())
        assert busy == "busy" and ready == "ready"
        assert closed == [("idle", aiohttp.WSMsgType.CLOSE, 1008)] * 2
        assert 0.9 < waited < 8
        assert _health(background.url)["sessions"] == 0 and not background.server.connections
    finally:
        background.stop()


def _raw_websocket(port: int, receive_buffer: int) -> socket.socket:
    """A WebSocket client on a plain socket with a tiny receive buffer (aiohttp's client always reads)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
    response = b""
    while b"\r\n\r\n" not in response:
        response += sock.recv(1)
    assert response.startswith(b"HTTP/1.1 101"), response
    return sock


def _send_frame(sock: socket.socket, payload: bytes, opcode: int) -> None:
    mask = os.urandom(4)
    header = bytes([0x80 | opcode]) + (bytes([0x80 | len(payload)]) if len(payload) < 126
                                      else bytes([0x80 | 126]) + struct.pack(">H", len(payload)))
    sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))


def test_a_client_that_stops_reading_video_is_closed(engine, server):
    limits = ServerLimits(send_timeout_seconds=1.0, idle_seconds=60, messages_per_second=500, burst=500)
    rng = np.random.default_rng(0)
    noisy = (rng.random((512, 512, 3)) * 255).astype(np.uint8)            # detailed frames: large segments
    background = BackgroundServer(StreamServer(engine, engine.reference(noisy), limits))
    sock = _raw_websocket(background.port, receive_buffer=4096)
    try:
        pcm = (rng.standard_normal(16000 * 8) * 3000).astype("<i2").tobytes()
        for start in range(0, len(pcm), 32000):
            _send_frame(sock, pcm[start: start + 32000], 0x2)
        _send_frame(sock, json.dumps({"type": "end"}).encode(), 0x1)
        deadline = time.monotonic() + 120
        while background.server.connections and time.monotonic() < deadline:
            time.sleep(0.2)                                                 # never reads: the server must give up
        health = _health(background.url)
        assert health["sessions"] == 0 and health["closed"] == {"slow_client": 1}
    finally:
        sock.close()
        background.stop()


# --------------------------------------------------------------------------- shared generation
def _frames(engine, reference, seed: int, audio: np.ndarray, batcher: Batcher) -> np.ndarray:
    session = batcher.engine(engine).session(reference, seed=seed)
    session.feed(audio)
    chunks = session.chunks(flush=True)
    frames = []
    while True:
        with batcher.generating():
            chunk = next(chunks, None)
        if chunk is None:
            return np.concatenate(frames)
        frames.append(chunk.frames)


def test_a_sessions_frames_do_not_depend_on_who_else_is_connected(engine, server):
    reference = server.server.reference
    audio = [np.random.default_rng(i).standard_normal(16000 * 3).astype(np.float32) * 0.1 for i in range(4)]
    alone_batcher = Batcher()
    alone = _frames(engine, reference, 7, audio[0], alone_batcher)
    shared_batcher, together = Batcher(gather_s=0.5), {}                  # a loaded CI machine: wait for all four

    def run(i: int) -> None:
        together[i] = _frames(engine, reference, 7 if i == 0 else 100 + i, audio[i], shared_batcher)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    alone_batcher.close()
    shared_batcher.close()
    assert shared_batcher.stats.mean_batch("dit") > 1.5, shared_batcher.stats   # they really shared DiT calls
    assert together[0].shape == alone.shape
    diff = np.abs(together[0].astype(int) - alone.astype(int))
    # identical up to float rounding of batched matmuls (a grey level or two on a few pixels: 2e-5 of them
    # differ, one value by 2 after the Lab colour correction and uint8 truncation) ...
    assert diff.max() <= 2 and (diff > 0).mean() < 1e-3, (diff.max(), (diff > 0).mean())
    # ... while a different seed changes the frames completely (the comparison can fail)
    other = np.abs(_frames(engine, reference, 8, audio[0], Batcher()).astype(int) - alone.astype(int))
    assert (other > 1).mean() > 0.1


def test_a_chunk_decoding_to_non_finite_values_stops_the_stream(tmp_path):
    broken = tiny_engine(tmp_path / "ckpt")
    with torch.no_grad():
        broken.model.head.head.weight.fill_(3e38)                            # finite weights, overflowing output
    background = BackgroundServer(StreamServer(broken, broken.reference(face_like_image())))

    async def stream():
        async with aiohttp.ClientSession() as http, http.ws_connect(f"{background.url}/ws") as ws:
            await ws.receive_json()
            await ws.send_bytes(np.zeros(16000 * 2, "<i2").tobytes()[:60000])
            await ws.send_str(json.dumps({"type": "end"}))
            message = await ws.receive_json(timeout=60)
            end = await ws.receive(timeout=10)
            return message, end.type, ws.close_code

    try:
        message, end, code = asyncio.run(stream())
    finally:
        background.stop()
    assert message["code"] == "generation_failed" and "NaN or infinite" in message["message"]
    assert end == aiohttp.WSMsgType.CLOSE and code == 1011
