"""Where generated chunks go: an MP4 file with the audio, raw rgb24 frames to a pipe, or fMP4 segments.

All sinks take `Chunk`s (uint8 frames + the audio they carry) as they are generated.
`FragmentEncoder` turns each chunk into a self-contained fragmented-MP4 media segment (H.264, each
chunk starting with a keyframe) after one initialisation segment, the form MediaSource plays.

Encoding stays off the generation's critical path: `ThreadedSink` writes chunks on its own thread while
the next chunk is generated (the server encodes fMP4 segments on its own threads the same way). H.264 is
NVENC (`h264_nvenc`, through PyAV) when an NVIDIA GPU can open it, else x264 at a fast preset; frames are
converted to YUV 4:2:0 with OpenCV (BT.601 limited range, as libswscale does, at a sixth of its cost).
"""

from __future__ import annotations

import functools
import io
import queue
import struct
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

import av
import cv2
import numpy as np
import torch

from vividhead.inference.engine import Chunk
from vividhead.models.audio_features import SAMPLE_RATE


class Sink(Protocol):
    def write(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


@functools.lru_cache(maxsize=None)
def nvenc_available() -> bool:
    """Whether PyAV's h264_nvenc opens here (an NVIDIA GPU with a driver that has NVENC)."""
    if not torch.cuda.is_available() or "h264_nvenc" not in av.codecs_available:
        return False
    try:
        context = av.CodecContext.create("h264_nvenc", "w")
        context.width = context.height = 256
        context.pix_fmt, context.time_base = "yuv420p", Fraction(1, 25)
        context.open()
        return True
    except av.FFmpegError:
        return False


def h264_settings(quality: int, live: bool) -> tuple[str, dict[str, str]]:
    """(codec, options) of the H.264 encoder: NVENC at its fastest preset when present, else a fast x264 preset.

    `quality` is x264's CRF (NVENC's constant-quality level); `live` trades size for latency (the server)."""
    if nvenc_available():
        return "h264_nvenc", {"preset": "p1", "tune": "ull" if live else "ll", "rc": "vbr", "cq": str(quality),
                              "bf": "0", "profile": "high"}
    options = {"crf": str(quality), "preset": "ultrafast" if live else "veryfast", "profile": "high"}
    return "libx264", {**options, "tune": "zerolatency"} if live else options


def yuv_frame(rgb: np.ndarray) -> av.VideoFrame:
    """uint8 RGB [H, W, 3] as a yuv420p frame (OpenCV's conversion: BT.601 limited range, like libswscale)."""
    return av.VideoFrame.from_ndarray(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2YUV_I420), format="yuv420p")


class Mp4Sink:
    """H.264 (yuv420p) + AAC MP4, written chunk by chunk."""

    def __init__(self, path: Path, size: int = 512, fps: int = 25, crf: int = 18) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w", format="mp4")   # whatever the name: /dev/full, out.video
        codec, options = h264_settings(crf, live=False)
        self.video = self.container.add_stream(codec, rate=fps)
        self.video.width = self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = options
        self.audio = self.container.add_stream("aac", rate=SAMPLE_RATE)
        self.audio.layout = "mono"
        self.audio_pts = 0

    def write(self, chunk: Chunk) -> None:
        for rgb in chunk.frames:
            self.container.mux(self.video.encode(yuv_frame(rgb)))
        samples = np.asarray(chunk.audio, np.float32).reshape(1, -1)
        if samples.size:
            frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = SAMPLE_RATE, self.audio_pts, Fraction(1, SAMPLE_RATE)
            self.audio_pts += samples.shape[1]
            self.container.mux(self.audio.encode(frame))

    def close(self) -> None:
        self.container.mux(self.video.encode(None))
        self.container.mux(self.audio.encode(None))
        self.container.close()


class NullSink:
    """Discards chunks (helper ranks of a sequence-parallel job, benchmarks)."""

    def write(self, chunk: Chunk) -> None:
        pass

    def close(self) -> None:
        pass


class RawSink:
    """rgb24 frames, row-major, back to back, to a binary stream (stdout by default)."""

    def __init__(self, stream: BinaryIO | None = None, size: int = 512, fps: int = 25, announce: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stdout.buffer
        if announce:
            print(f"vividhead stream: raw video rgb24 {size}x{size} {fps} fps on stdout "
                  f"({size * size * 3} bytes per frame); e.g. ffplay -f rawvideo -pixel_format rgb24 "
                  f"-video_size {size}x{size} -framerate {fps} -", file=sys.stderr, flush=True)

    def write(self, chunk: Chunk) -> None:
        self.stream.write(np.ascontiguousarray(chunk.frames).tobytes())
        self.stream.flush()

    def close(self) -> None:
        self.stream.flush()


def split_init(data: bytes) -> tuple[bytes, bytes]:
    """Split a fragmented MP4 into its initialisation segment (ftyp+moov) and the media (moof+mdat...)."""
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset: offset + 8])
        if kind == b"moof":
            return data[:offset], data[offset:]
        if size < 8:
            break
        offset += size
    return data, b""


def avc_codec_string(init: bytes) -> str:
    """`avc1.PPCCLL` from the avcC box of an init segment (for MediaSource.addSourceBuffer)."""
    at = init.find(b"avcC")
    if at < 0:
        raise ValueError("init segment has no avcC box")
    profile, compat, level = init[at + 5], init[at + 6], init[at + 7]
    return f"avc1.{profile:02X}{compat:02X}{level:02X}"


class FragmentEncoder:
    """Encodes each chunk as one fMP4 media segment; `init` is the shared initialisation segment."""

    def __init__(self, size: int = 512, fps: int = 25, crf: int = 23) -> None:
        self.size, self.fps = size, fps
        self.codec, self.options = h264_settings(crf, live=True)
        self.init: bytes | None = None
        self.frames = 0

    def encode(self, frames: np.ndarray) -> bytes:
        """H.264 fMP4 bytes of these frames: a keyframe first, timestamps continuing the stream."""
        buffer = io.BytesIO()
        container = av.open(buffer, mode="w", format="mp4",
                            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        stream = container.add_stream(self.codec, rate=self.fps)
        stream.width = stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.options = self.options
        for rgb in frames:
            container.mux(stream.encode(yuv_frame(rgb)))
        container.mux(stream.encode(None))
        container.close()
        init, media = split_init(buffer.getvalue())
        if self.init is None:
            self.init = init
        self.frames += len(frames)
        return media

    @property
    def mime(self) -> str:
        if self.init is None:
            raise RuntimeError("no segment encoded yet")
        return f'video/mp4; codecs="{avc_codec_string(self.init)}"'


class ThreadedSink:
    """Writes chunks to `sink` on its own thread, so encoding runs beside the generation of the next chunk.

    At most `depth` chunks wait (memory stays bounded; a slow sink slows generation down instead). Each chunk's
    encode seconds are added to its timings as `output_encode`; `on_written` sees it once written. An error of
    the sink is raised by the next `write` or by `close`."""

    def __init__(self, sink: Sink, depth: int = 2, on_written: Callable[[Chunk], None] | None = None) -> None:
        self.sink, self.on_written = sink, on_written
        self.queue: queue.Queue[Chunk | None] = queue.Queue(maxsize=depth)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True, name="vividhead-encode")
        self.thread.start()

    def write(self, chunk: Chunk) -> None:
        if not self._put(chunk):
            raise self.error or RuntimeError("the encoding thread stopped")

    def stop(self) -> None:
        """Let the thread write what is queued, then end it (without closing the sink)."""
        self._put(None)
        self.thread.join()

    def close(self) -> None:
        self.stop()
        if self.error is not None:
            raise self.error
        self.sink.close()

    def _put(self, item: Chunk | None) -> bool:
        """Queue `item`, waiting while the queue is full; False when the thread failed or ended."""
        while self.error is None and self.thread.is_alive():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            try:
                started = time.perf_counter()
                self.sink.write(chunk)
                chunk.timings["output_encode"] = time.perf_counter() - started
                if self.on_written is not None:
                    self.on_written(chunk)
            except BaseException as err:   # reported to the generating thread by write/close
                self.error = err
                return


def stream_to_sink(session, audio: np.ndarray, sink: Sink, piece_seconds: float | None = None,
                   on_chunk: "Callable[[Chunk], None] | None" = None) -> None:
    """Feed `audio` to a session (whole, or in pieces as a live source would) and write every chunk.

    Chunks are written on a `ThreadedSink` thread while the next one is generated. The output encode time of
    each chunk is added to its timings and to the session's stage totals as `output_encode`; `on_chunk` sees
    each chunk once written. A generation error (e.g. `NonFiniteOutput`) stops the writer and is raised.
    """
    def written(chunk: Chunk) -> None:
        stages = session.stats.stages
        stages["output_encode"] = stages.get("output_encode", 0.0) + chunk.timings["output_encode"]
        if on_chunk is not None:
            on_chunk(chunk)

    writer = ThreadedSink(sink, on_written=written)
    step = len(audio) if not piece_seconds else max(1, int(piece_seconds * SAMPLE_RATE))
    try:
        for start in range(0, max(len(audio), 1), step):
            session.feed(audio[start: start + step])
            for chunk in session.chunks(flush=start + step >= len(audio)):
                writer.write(chunk)
    except BaseException:
        writer.stop()
        raise
    writer.close()
