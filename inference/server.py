"""`vividhead stream --serve`: a local aiohttp server streaming talking heads to a browser over a WebSocket.

Protocol on `/ws` (one stream per connection, each with its own `StreamSession`):

client -> server
  binary                              PCM audio, 16 kHz mono, s16le (or f32le after {"type": "start", "format": "f32"})
  {"type": "start", "format": "s16"|"f32"}      optional, before the audio
  {"type": "upload", "size": N, "name": "x.wav"}  the next N binary bytes are an audio file (any format)
  {"type": "end"}                     no more audio: the last partial chunk is generated, then "done"
server -> client
  {"type": "ready", "mime": ..., "width", "height", "fps", "variant", "first_chunk", "chunk_frames", "limits"}
  binary                              the fMP4 initialisation segment, then one media segment per chunk
  {"type": "chunk", "index", "frames", "latency_ms", "first_frame_ms", "fps", "timings_ms"}
  {"type": "error", "code", "message"}  a bad message is dropped and the session goes on; codes idle, too_slow,
                                      slow_client and generation_failed end it (the socket closes with 1008 / 1011)
  {"type": "done", "stats": {...}}    then the server closes the socket (the slot is free again)

Access (`Access`): a WebSocket upgrade is accepted only from the server's own page (its Origin equals the
URL the request came to) or an origin given with --allow-origin; on loopback the Host header must name a
loopback address (no DNS rebinding); on any other address every request but /static/ needs the token
(`?token=` or `Authorization: Bearer`); an empty or blank token is refused at start. Refusals are 403 with the
reason. `listen` binds the sockets before the model loads, so a bad address fails at once, in one line. See
docs/stream.md, "Threat model".

Limits (`ServerLimits`): message size and rate, upload size, audio waiting to be generated (an upload is
probed and decoded incrementally, refused past that cap), concurrent sessions, idle time without audio,
the least rate at which a session must send audio (a client trickling a few bytes loses its slot), and how long
a client may leave video unread. Each session generates in its own thread through a
`Batcher` view of the engine (inference/batcher.py): concurrent sessions' DiT and VAE calls run batched,
not one after another. Each chunk's fMP4 encoding runs on an encoder thread beside the next chunk's
generation; at most `queued_chunks` encoded-or-waiting chunks per session are held.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import io
import ipaddress
import json
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from aiohttp import WSCloseCode, WSMsgType, web

from vividhead.envfail import EnvironmentFailure, InputError
from vividhead.inference.batcher import Batcher
from vividhead.inference.engine import Chunk, FlashHeadEngine, Reference, StreamSession
from vividhead.inference.sinks import FragmentEncoder
from vividhead.models.audio_features import SAMPLE_RATE, AudioTooLong, load_audio

STATIC = Path(__file__).resolve().parent / "static"
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class ServerLimits:
    max_message_bytes: int = 256 * 1024          # larger messages get an error frame and are dropped
    hard_message_bytes: int = 4 * 1024 * 1024    # larger frames close the connection (aiohttp)
    messages_per_second: float = 50.0            # sustained rate; bursts up to `burst`
    burst: int = 100
    max_upload_bytes: int = 32 * 1024 * 1024
    max_pending_seconds: float = 120.0           # audio queued but not generated yet; also the longest upload
    max_sessions: int = 4
    idle_seconds: float = 30.0                   # no audio and nothing to generate for this long: closed
    # While the server waits for audio, a session must send at least this many bytes per second on average; it
    # may fall behind by `idle_seconds` of it. 4000 B/s is an eighth of live s16 PCM (32000 B/s), and an upload
    # over a 32 kbit/s link. Below it (a client trickling bytes to hold a slot) the session is closed: too_slow.
    min_audio_bytes_per_second: float = 4000.0
    send_timeout_seconds: float = 10.0           # a chunk the client does not take within this: closed
    queued_chunks: int = 2                       # generated chunks waiting for the encoder/socket per session


@dataclass(frozen=True)
class Access:
    """Who may use the server: origins besides the page's own, and the token (None: none required)."""

    token: str | None = None
    allowed_origins: frozenset[str] = frozenset()
    loopback: bool = True                        # bound to loopback only: the Host header must name loopback

    def __post_init__(self) -> None:
        if self.token is not None and not self.token.strip():
            raise InputError("--token is empty: give a non-empty token, or leave --token out for a random one")

    def refusal(self, request: web.Request) -> str | None:
        """Why `request` is refused (403), or None."""
        host = request.host or ""
        if self.loopback and self.token is None and _hostname(host) not in LOOPBACK_NAMES:
            return f"Host {host!r} is not a loopback name (the server is local only)"
        origin = request.headers.get("Origin")
        if origin is not None and origin.lower() != f"{request.scheme}://{host}".lower() \
                and origin.lower() not in self.allowed_origins:
            return f"Origin {origin!r} is not allowed (the server's own page only; add origins with --allow-origin)"
        if self.token is not None and not request.path.startswith("/static/"):
            given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), self.token.encode()):
                return "missing or wrong token (the server prints its URL with ?token=...)"
        return None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_policy(host: str, token: str | None = None, allow_origins: list[str] | tuple[str, ...] = ()) -> Access:
    """The access rules for a server bound to `host`: off loopback a token is required (random unless given)."""
    loopback = is_loopback(host)
    if token is None and not loopback:
        token = secrets.token_urlsafe(18)
    return Access(token=token, allowed_origins=frozenset(o.rstrip("/").lower() for o in allow_origins), loopback=loopback)


def listen(host: str, port: int) -> list[socket.socket]:
    """Listening sockets on every address `host` names (as aiohttp would bind them), before the model loads.

    A port outside 0..65535, or a host that is no address of this machine, is an InputError; a port in use
    or not allowed is an EnvironmentFailure; each is one line."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port {port}: a TCP port is 0..65535")
    shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise InputError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(addresses):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(128)
    except OSError as err:
        for sock in sockets:
            sock.close()
        if err.errno == errno.EADDRNOTAVAIL:
            raise InputError(f"--host {host}: not an address of this machine") from None
        reason = {errno.EADDRINUSE: "the port is in use (another server, or another `vividhead stream --serve`?)",
                  errno.EACCES: "permission denied (ports below 1024 need privileges)"}.get(err.errno, err.strerror)
        raise EnvironmentFailure(f"cannot listen on {shown}: {reason}") from None
    return sockets


def page_url(host: str, port: int, access: Access) -> str:
    """The page's URL, IPv6 addresses in brackets and the token in the query when one is required."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/" + (f"?token={access.token}" if access.token else "")


def _hostname(host_header: str) -> str:
    """`127.0.0.1:8765` -> 127.0.0.1, `[::1]:8765` -> ::1, `localhost` -> localhost."""
    if host_header.startswith("["):
        return host_header[1: host_header.find("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


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
    """Owns the engine (behind a Batcher), the reference and the live connections."""

    def __init__(self, engine: FlashHeadEngine, reference: Reference, limits: ServerLimits = ServerLimits(),
                 access: Access = Access()) -> None:
        self.engine, self.reference, self.limits, self.access = engine, reference, limits, access
        self.batcher = Batcher()
        self.shared = self.batcher.engine(engine)
        self.connections: dict[int, "Connection"] = {}
        self.closed: dict[str, int] = {}                 # sessions the server ended, by reason (done, idle, ...)
        self.generation = ThreadPoolExecutor(limits.max_sessions, thread_name_prefix="vividhead-generate")
        self.encoding = ThreadPoolExecutor(limits.max_sessions, thread_name_prefix="vividhead-encode")
        probe = FragmentEncoder(engine.geometry.size, engine.geometry.fps)
        probe.encode(np.zeros((1, engine.geometry.size, engine.geometry.size, 3), np.uint8))
        self.mime = probe.mime

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.limits.max_message_bytes, middlewares=[self._guard])
        app.router.add_get("/", self.index)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/api/health", self.health)
        app.router.add_static("/static/", STATIC)
        app.on_cleanup.append(self._cleanup)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler):
        reason = self.access.refusal(request)
        if reason is not None:
            raise web.HTTPForbidden(text=reason + "\n")
        return await handler(request)

    async def _cleanup(self, _app: web.Application) -> None:
        self.batcher.close()
        self.generation.shutdown(wait=False, cancel_futures=True)
        self.encoding.shutdown(wait=False, cancel_futures=True)

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def health(self, _request: web.Request) -> web.Response:
        return web.json_response({"sessions": len(self.connections), "max_sessions": self.limits.max_sessions,
                                  "closed": self.closed,
                                  "variant": self.engine.model.config.preset, "device": str(self.engine.device)})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=self.limits.hard_message_bytes, heartbeat=30)
        await ws.prepare(request)
        if len(self.connections) >= self.limits.max_sessions:
            await ws.send_json({"type": "error", "code": "busy", "message": f"at most {self.limits.max_sessions} sessions"})
            await ws.close()
            return ws
        conn = Connection(self, ws, request)
        self.connections[id(conn)] = conn
        try:
            await conn.run()
        finally:
            await conn.shutdown()
            self.connections.pop(id(conn), None)
        return ws


class _Closing(Exception):
    """End the connection: an error message with `code`, then a WebSocket close with `close_code` and the reason."""

    def __init__(self, close_code: WSCloseCode, code: str, reason: str) -> None:
        super().__init__(reason)
        self.close_code, self.code, self.reason = close_code, code, reason


class Connection:
    """One WebSocket client around one session: this task reads; tasks generate, encode+send and watch for idling."""

    def __init__(self, server: StreamServer, ws: web.WebSocketResponse, request: web.Request) -> None:
        self.server, self.ws, self.request, self.limits = server, ws, request, server.limits
        self.session: StreamSession | None = server.shared.session(server.reference)
        self.encoder = FragmentEncoder(server.engine.geometry.size, server.engine.geometry.fps)
        self.rate = _RateLimiter(self.limits.messages_per_second, self.limits.burst)
        self.dtype = np.dtype("<i2")
        self.upload: bytearray | None = None
        self.upload_size = 0
        self.ended = False
        self.wake = asyncio.Event()
        self.outbox: asyncio.Queue[Chunk | None] = asyncio.Queue(self.limits.queued_chunks)
        self.tasks: list[asyncio.Task] = []
        self.inflight: asyncio.Future | None = None
        self.last_activity = time.monotonic()
        self.received = 0                               # audio bytes (PCM or upload) received
        self.allowance = self._allowance_cap            # bytes the session may still fall behind the least rate
        self.closing: _Closing | None = None
        self.closer: asyncio.Task | None = None         # the task closing the socket

    async def run(self) -> None:
        g = self.server.engine.geometry
        await self.ws.send_json({"type": "ready", "mime": self.server.mime, "width": g.size, "height": g.size,
                                 "fps": g.fps, "variant": self.server.engine.model.config.preset,
                                 "first_chunk": self.server.engine.first_chunk_frames, "chunk_frames": g.new_frames, "sample_rate": SAMPLE_RATE,
                                 "limits": asdict(self.limits)})
        self.tasks = [asyncio.create_task(self._guarded(body)) for body in (self._generate(), self._send(), self._watch())]
        async for msg in self.ws:
            if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                await self._receive(msg.type, msg.data)
            elif msg.type == WSMsgType.ERROR:
                break

    async def _guarded(self, body) -> None:
        try:
            await body
        except _Closing as closing:
            await self._close(closing)

    @property
    def _allowance_cap(self) -> float:
        return self.limits.min_audio_bytes_per_second * self.limits.idle_seconds

    async def _watch(self) -> None:
        """Close the session when it waits for audio (nothing to generate or send) and has had none for
        `idle_seconds`, or has fallen `idle_seconds` behind `min_audio_bytes_per_second` (a trickle)."""
        tick = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.limits.idle_seconds / 4))
            now = time.monotonic()
            elapsed, tick = now - tick, now
            if self.ended or self.inflight is not None or not self.outbox.empty():
                continue                                # the server is busy, not the client
            self.allowance -= self.limits.min_audio_bytes_per_second * elapsed
            if now - self.last_activity > self.limits.idle_seconds:
                raise _Closing(WSCloseCode.POLICY_VIOLATION, "idle", f"no audio for {self.limits.idle_seconds:g} s; "
                                                                    "session closed")
            if self.received and self.allowance <= 0:
                raise _Closing(WSCloseCode.POLICY_VIOLATION, "too_slow",
                               f"audio arrived at under {self.limits.min_audio_bytes_per_second:g} bytes/s (the "
                               f"least rate) for {self.limits.idle_seconds:g} s; session closed")

    async def _close(self, closing: _Closing) -> None:
        """Tell the client why (when it still reads), then close; a client that stopped reading is cut off."""
        if self.closing is not None or self.ws.closed:
            return
        self.closing, self.closer = closing, asyncio.current_task()
        self.server.closed[closing.code] = self.server.closed.get(closing.code, 0) + 1
        try:
            told = closing.close_code == WSCloseCode.OK or await _within(self.error(closing.code, closing.reason), 1.0)
            closed = told and await _within(self.ws.close(code=closing.close_code, message=closing.code.encode()), 2.0)
        except (ConnectionError, RuntimeError):
            closed = False
        if not closed and self.request.transport is not None:
            self.request.transport.abort()              # it does not read: drop it with its unsent data

    async def shutdown(self) -> None:
        if self.closer is not None and self.closer is not asyncio.current_task():
            await asyncio.wait([self.closer], timeout=3.0)  # let a close in progress finish its handshake
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        if self.inflight is not None:
            await asyncio.wait([self.inflight])            # the session's chunk in flight finishes in its thread
        self.session, self.upload, self.tasks, self.inflight = None, None, [], None   # frees the session's tensors
        while not self.outbox.empty():
            self.outbox.get_nowait()

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
        self.last_activity = time.monotonic()
        self.received += len(data)
        self.allowance = min(self._allowance_cap, self.allowance + len(data))
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
            self.last_activity = time.monotonic()
        elif kind == "end":
            self.ended = True
            self.wake.set()
        else:
            await self.error("unknown_type", f"unknown message type {kind!r} (start, upload, end)")

    async def _upload_bytes(self, data: bytes) -> None:
        assert self.upload is not None and self.session is not None
        self.upload.extend(data[: self.upload_size - len(self.upload)])
        if len(self.upload) < self.upload_size:
            return
        raw, self.upload = bytes(self.upload), None
        room = self.limits.max_pending_seconds - self.session.queue.seconds()
        try:
            audio = await asyncio.to_thread(load_audio, io.BytesIO(raw), SAMPLE_RATE, "upload", room)
        except AudioTooLong as err:
            return await self.error("too_long", f"{err} (audio waiting to be generated is capped at "
                                                f"{self.limits.max_pending_seconds:g} s); upload refused")
        except ValueError as err:
            return await self.error("bad_upload", str(err))
        finally:
            del raw
        await self._feed(audio)
        self.ended = True
        self.wake.set()

    async def _feed(self, samples: np.ndarray) -> None:
        assert self.session is not None
        if self.session.queue.seconds() + len(samples) / SAMPLE_RATE > self.limits.max_pending_seconds:
            return await self.error("backpressure", f"more than {self.limits.max_pending_seconds:g} s of audio waiting "
                                                    f"(the cap); dropped")
        self.session.feed(samples)
        self.wake.set()

    # ------------------------------------------------------------------------------ output
    async def _generate(self) -> None:
        """Generate chunks as audio arrives (in a generation thread, batched with other sessions)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            flush = False
            while self.session is not None:
                flush = self.ended
                # shielded: a disconnect waits for the chunk in flight instead of orphaning it
                self.inflight = asyncio.get_running_loop().run_in_executor(self.server.generation, self._next_chunk, flush)
                try:
                    chunk = await asyncio.shield(self.inflight)   # on cancel, shutdown() waits for it
                except Exception as err:             # e.g. NonFiniteOutput: stop the stream with the reason
                    self.inflight = None
                    raise _Closing(WSCloseCode.INTERNAL_ERROR, "generation_failed", str(err)) from err
                self.inflight = None
                if chunk is None:
                    if flush or not self.ended:
                        break
                    continue                         # "end" arrived meanwhile: once more, flushing
                self.last_activity = time.monotonic()
                await self.outbox.put(chunk)         # waits while the sender is `queued_chunks` behind
            if flush and self.session is not None:
                await self.outbox.put(None)
                return

    def _next_chunk(self, flush: bool) -> Chunk | None:
        session = self.session
        if session is None:
            return None
        with self.server.batcher.generating():
            return next(session.chunks(flush=flush), None)

    async def _send(self) -> None:
        """Encode each chunk on an encoder thread (beside the next chunk's generation) and send it."""
        loop = asyncio.get_running_loop()
        while (chunk := await self.outbox.get()) is not None:
            started = time.perf_counter()
            media = await loop.run_in_executor(self.server.encoding, self.encoder.encode, chunk.frames)
            chunk.timings["output_encode"] = time.perf_counter() - started
            stats = self.session.stats if self.session is not None else None
            if stats is None:
                return
            stats.stages["output_encode"] = stats.stages.get("output_encode", 0.0) + chunk.timings["output_encode"]
            if self.encoder.init is not None and self.encoder.frames == len(chunk.frames):
                await self._send_within(self.ws.send_bytes(self.encoder.init))
            await self._send_within(self.ws.send_bytes(media))
            await self._send_within(self.ws.send_json({
                "type": "chunk", "index": chunk.index, "frames": len(chunk.frames),
                "latency_ms": round(stats.chunk_latency[chunk.index] * 1000, 1),
                "first_frame_ms": None if stats.first_frame is None else round(stats.first_frame * 1000, 1),
                "fps": round(stats.fps, 2), "timings_ms": {k: round(v * 1000, 1) for k, v in chunk.timings.items()}}))
        if self.session is not None:
            await self._send_within(self.ws.send_json({"type": "done", "stats": self.session.stats.summary()}))
            await self._close(_Closing(WSCloseCode.OK, "done", "stream done"))

    async def _send_within(self, sending) -> None:
        """Send, or end the session when the client has not taken the data within `send_timeout_seconds`."""
        if not await _within(sending, self.limits.send_timeout_seconds):
            raise _Closing(WSCloseCode.POLICY_VIOLATION, "slow_client", f"the client took no video for "
                           f"{self.limits.send_timeout_seconds:g} s; session closed")


async def _within(operation, seconds: float) -> bool:
    """Await `operation` for at most `seconds`: True when it finished (its error is raised), False (cancelled) if not."""
    task = asyncio.ensure_future(operation)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        return False
    if task.cancelled():        # aiohttp shares one drain waiter: cancelling a stuck send cancels the next one too
        return False
    task.result()
    return True


def serve(engine: FlashHeadEngine, reference: Reference, host: str = "127.0.0.1", port: int = 8765,
          limits: ServerLimits = ServerLimits(), access: Access | None = None,
          sockets: list[socket.socket] | None = None) -> None:
    """Run the server until interrupted, on `sockets` from `listen(host, port)` (bound here when not given)."""
    access = access or access_policy(host)
    sockets = sockets if sockets is not None else listen(host, port)
    port = sockets[0].getsockname()[1]                  # the port chosen when 0 was asked for
    if not access.loopback:
        print(f"vividhead stream: serving on {host}, reachable from other machines; every request needs the token "
              f"below (keep the URL private; plain HTTP, use a TLS proxy across untrusted networks)")
    server = StreamServer(engine, reference, limits, access)
    print(f"vividhead stream: open {page_url(host, port, access)} ({engine.model.config.preset} on {engine.device})",
          flush=True)
    web.run_app(server.app(), sock=sockets, print=None)


class BackgroundServer:
    """The server on its own event loop in a daemon thread (for embedding in an app, and for tests)."""

    def __init__(self, server: StreamServer, host: str = "127.0.0.1", port: int = 0) -> None:
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
        """The base URL (loopback when bound to every address), without the token."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return page_url(host, self.port, Access()).rstrip("/")

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)
