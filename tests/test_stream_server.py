"""The local stream server: two concurrent sessions, bad messages, limits, and freeing a session on disconnect."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref

import aiohttp
import numpy as np
import pytest

from stream_fixtures import face_like_image, tiny_engine, write_wav
from vividhead.inference.server import BackgroundServer, ServerLimits, StreamServer

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
        assert chunks[0]["frames"] == 33 and all(c["latency_ms"] > 0 for c in chunks)
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


def test_server_refuses_sessions_over_the_limit(server):
    async def many():
        async with aiohttp.ClientSession() as http:
            sockets = [await http.ws_connect(f"{server.url}/ws") for _ in range(3)]
            for ws in sockets:
                assert (await ws.receive_json())["type"] == "ready"
            extra = await http.ws_connect(f"{server.url}/ws")
            refused = await extra.receive_json()
            for ws in sockets:
                await ws.close()
            return refused

    assert asyncio.run(many())["code"] == "busy"


