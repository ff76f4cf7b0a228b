"""`vividhead stream --serve`: a local aiohttp server streaming talking heads to a browser over a WebSocket.

Protocol on `/ws` (one stream per connection, each with its own `StreamSession`):

client -> server
  binary                              PCM audio, 16 kHz mono, s16le (or f32le after {"type": "start", "format": "f32"})
  {"type": "start", "format": "s16"|"f32"}      optional, before the audio
  {"type": "upload", "size": N, "name": "x.wav"}  the next N binary bytes are an audio file (any format)
  {"type": "end"}                     no more audio: the last partial chunk is generated, then "done"
server -> client
  {"type": "ready", "mime": ..., "width", "height", "fps", "variant", "first_chunk", "chunk_frames"}
  binary                              the fMP4 initialisation segment, then one media segment per chunk
  {"type": "chunk", "index", "frames", "latency_ms", "first_frame_ms", "fps", "timings_ms"}
  {"type": "error", "code", "message"}  a bad message is dropped; the session goes on
  {"type": "done", "stats": {...}}

Limits (`ServerLimits`): message size, messages per second, upload size, audio waiting to be generated and
concurrent sessions. The server binds 127.0.0.1 unless told otherwise. Generation runs in worker threads,
one chunk at a time across sessions (they share the model); a disconnect cancels the session's work and drops it.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from aiohttp import WSMsgType, web

from vividhead.inference.engine import Chunk, FlashHeadEngine, Reference, StreamSession
from vividhead.inference.sinks import FragmentEncoder
from vividhead.models.audio_features import SAMPLE_RATE, load_audio

STATIC = Path(__file__).resolve().parent / "static"


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = 256 * 1024          # larger messages get an error frame and are dropped
    hard_message_bytes: int = 4 * 1024 * 1024    # larger frames close the connection (aiohttp)
    messages_per_second: float = 50.0            # sustained rate; bursts up to `burst`
    burst: int = 100
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pending_seconds: float = 120.0           # audio queued but not generated yet
    max_sessions: int = 4


class _RateLimiter:
    """Token bucket: `rate` messages per second, at most `burst` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, burst, float(burst), time.monotonic()

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class StreamServer:
    """Owns the engine, the reference and the live connections."""

    def __init__(self, engine: FlashHeadEngine, reference: Reference, limits: ServerLimits = ServerLimits()) -> None:
        self.engine, self.reference, self.limits = engine, reference, limits
        self.connections: dict[int, "Connection"] = {}
        self.generate_lock: asyncio.Lock | None = None
        probe = FragmentEncoder(engine.geometry.size, engine.geometry.fps)
        probe.encode(np.zeros((1, engine.geometry.size, engine.geometry.size, 3), np.uint8))
        self.mime = probe.mime

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_message_bytes)
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/api/health", self.health)
        app.router.add_static("/static/", STATIC)
        return app

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"sessions": len(self.connections), "variant": self.engine.model.config.preset,
                                  "device": str(self.engine.device)})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.limits.hard_message_bytes, heartbeat=30)
        await ws.prepare(request)
        if self.generate_lock is None:
            self.generate_lock = asyncio.Lock()
        if len(self.connections) >= self.limits.max_sessions:
            await ws.send_json({"type": "error", "code": "busy", "message": f"at most {self.limits.max_sessions} sessions"})
            await ws.close()
            return ws
        conn = Connection(self, ws)
        self.connections[id(conn)] = conn
        try:
            await conn.run()
        finally:
            await conn.shutdown()
            self.connections.pop(id(conn), None)
        return ws


class Connection:
    """One WebSocket client and its stream session."""

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse) -> None:
        self.server, self.ws, self.limits = server, ws, server.limits
        self.session: StreamSession | None = server.engine.session(server.reference)
        self.encoder = FragmentEncoder(server.engine.geometry.size, server.engine.geometry.fps)
        self.rate = _RateLimiter(self.limits.messages_per_second, self.limits.burst)
        self.dtype = np.dtype("<i2")
        self.upload: bytearray | None = None
        self.upload_size = 0
        self.ended = False
        self.wake = asyncio.Event()
        self.worker: asyncio.Task | None = None
        self.inflight: asyncio.Future | None = None
        self.sent_init = False

    async def run(self) -> None:
        g = self.server.engine.geometry
        await self.ws.send_json({"type": "ready", "mime": self.server.mime, "width": g.size, "height": g.size,
                                 "fps": g.fps, "variant": self.server.engine.model.config.preset,
                                 "first_chunk": g.frames, "chunk_frames": g.new_frames, "sample_rate": SAMPLE_RATE})
        self.worker = asyncio.create_task(self._work())
        async for msg in self.ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await self._receive(msg.type, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break

    async def shutdown(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            try:
                await self.worker
            except (asyncio.CancelledError, Exception):
                pass
        if self.inflight is not None:
            await asyncio.wait([self.inflight])
        self.session, self.upload, self.worker, self.inflight = None, None, None, None   # frees the session's tensors

    async def error(self, code: str, message: str) -> None:
        if not self.ws.closed:
            await self.ws.send_json({"type": "error", "code": code, "message": message})

    # ------------------------------------------------------------------------------- input
    async def _receive(self, kind: WSMsgType, data: str | bytes) -> None:
        if not self.rate.allow():
            return await self.error("rate_limited", f"more than {self.limits.messages_per_second:g} messages per second; message dropped")
        if len(data) > self.limits.max_message_bytes:
            return await self.error("too_large", f"message of {len(data)} bytes > limit {self.limits.max_message_bytes}; dropped")
        if self.ended:
            return await self.error("ended", "the stream has ended; open a new connection for a new stream")
        if kind == WSMsgType.TEXT:
            return await self._control(data)
        if self.upload is not None:
            return await self._upload_bytes(data)
        if len(data) % self.dtype.itemsize:
            return await self.error("bad_pcm", f"PCM {self.dtype.name} needs a multiple of {self.dtype.itemsize} bytes, got {len(data)}")
        pcm = np.frombuffer(data, self.dtype)
        samples = pcm.astype(np.float32) / 32768.0 if self.dtype.kind == "i" else pcm.astype(np.float32)
        if not np.isfinite(samples).all():
            return await self.error("bad_pcm", "PCM contains NaN or infinite samples")
        await self._feed(samples)

    async def _control(self, text: str) -> None:
        try:
            message = json.loads(text)
            kind = message["type"]
        except (json.JSONDecodeError, TypeError, KeyError):
            return await self.error("malformed", 'expected a JSON object with a "type" field')
        if kind == "start":
            fmt = message.get("format", "s16")
            if fmt not in ("s16", "f32"):
                return await self.error("bad_format", f'format must be "s16" or "f32", got {fmt!r}')
            self.dtype = np.dtype("<i2" if fmt == "s16" else "<f4")
        elif kind == "upload":
            size = message.get("size")
            if not isinstance(size, int) or not 0 < size <= self.limits.max_upload_bytes:
                return await self.error("bad_upload", f"upload size must be an integer in 1..{self.limits.max_upload_bytes}")
            self.upload, self.upload_size = bytearray(), size
        elif kind == "end":
            self.ended = True
            self.wake.set()
        else:
            await self.error("unknown_type", f"unknown message type {kind!r} (start, upload, end)")

    async def _upload_bytes(self, data: bytes) -> None:
        assert self.upload is not None
        self.upload.extend(data[: self.upload_size - len(self.upload)])
        if len(self.upload) < self.upload_size:
            return
        raw, self.upload = bytes(self.upload), None
        try:
            audio = await asyncio.to_thread(load_audio, io.BytesIO(raw), SAMPLE_RATE, "upload")
        except ValueError as err:
            return await self.error("bad_upload", str(err))
        await self._feed(audio)
        self.ended = True
        self.wake.set()

    async def _feed(self, samples: np.ndarray) -> None:
        assert self.session is not None
        if self.session.queue.seconds() + len(samples) / SAMPLE_RATE > self.limits.max_pending_seconds:
            return await self.error("backpressure", f"more than {self.limits.max_pending_seconds:g} s of audio waiting; dropped")
        self.session.feed(samples)
        self.wake.set()

    # ------------------------------------------------------------------------------ output
    async def _work(self) -> None:
        lock = self.server.generate_lock
        assert lock is not None
        while True:
            await self.wake.wait()
            self.wake.clear()
            flush = False
            while self.session is not None:
                flush = self.ended
                async with lock:  # shielded: a disconnect waits for the chunk in flight instead of orphaning it
                    self.inflight = asyncio.ensure_future(asyncio.to_thread(self._next_chunk, flush))
                    chunk = await asyncio.shield(self.inflight)
                if chunk is None:
                    if flush or not self.ended:
                        break
                    continue                      # "end" arrived meanwhile: once more, flushing
                await self._send(chunk)
            if flush and self.session is not None:
                await self.ws.send_json({"type": "done", "stats": self.session.stats.summary()})
                return

    def _next_chunk(self, flush: bool) -> Chunk | None:
        return next(self.session.chunks(flush=flush), None) if self.session is not None else None

    async def _send(self, chunk: Chunk) -> None:
        started = time.perf_counter()
        media = await asyncio.to_thread(self.encoder.encode, chunk.frames)
        chunk.timings["output_encode"] = time.perf_counter() - started
        if not self.sent_init and self.encoder.init:
            await self.ws.send_bytes(self.encoder.init)
            self.sent_init = True
        await self.ws.send_bytes(media)
        stats = self.session.stats
        await self.ws.send_json({
            "type": "chunk", "index": chunk.index, "frames": len(chunk.frames),
            "latency_ms": round(stats.chunk_latency[-1] * 1000, 1),
            "first_frame_ms": None if stats.first_frame is None else round(stats.first_frame * 1000, 1),
            "fps": round(stats.fps, 2), "timings_ms": {k: round(v * 1000, 1) for k, v in chunk.timings.items()}})


def serve(engine: FlashHeadEngine, reference: Reference, host: str = "127.0.0.1", port: int = 8765,
          limits: ServerLimits = ServerLimits()) -> None:
    """Run the server until interrupted."""
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}, reachable from other machines; the server has no authentication")
    server = StreamServer(engine, reference, limits)
    print(f"vividhead stream: open http://{host}:{port}/ ({engine.model.config.preset} on {engine.device})", flush=True)
    web.run_app(server.app(), host=host, port=port, print=None)


class BackgroundServer:
    """The server on its own event loop in a daemon thread (for embedding in an app, and for tests)."""

    def __init__(self, server: StreamServer, host: str = "127.0.0.1", port: int = 0) -> None:
        import threading

        self.server, self.host = server, host
        self.loop = asyncio.new_event_loop()
        self.started = threading.Event()
        self.port = port
        self.thread = threading.Thread(target=self._run, daemon=True, name="vividhead-stream-server")
        self.thread.start()
        if not self.started.wait(30):
            raise RuntimeError("the stream server did not start within 30 s")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.server.app())
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, self.port)
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.started.set()
        self.loop.run_forever()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
