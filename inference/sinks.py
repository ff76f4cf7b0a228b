"""Where generated chunks go: an MP4 file with the audio, raw rgb24 frames to a pipe, or fMP4 segments.

All sinks take `Chunk`s (uint8 frames + the audio they carry) as they are generated.
`FragmentEncoder` turns each chunk into a self-contained fragmented-MP4 media segment (H.264, each
chunk starting with a keyframe) after one initialisation segment, the form MediaSource plays.
"""

from __future__ import annotations

import io
import struct
import sys
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Callable, Protocol

import av
import numpy as np

from vividhead.inference.engine import Chunk
from vividhead.models.audio_features import SAMPLE_RATE


class Sink(Protocol):
    def write(self, chunk: Chunk) -> None: ...

    def close(self) -> None: ...


class Mp4Sink:
    """H.264 (yuv420p) + AAC MP4, written chunk by chunk."""

    def __init__(self, path: Path, size: int = 512, fps: int = 25, crf: int = 18, preset: str = "veryfast") -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        self.video = self.container.add_stream("libx264", rate=fps)
        self.video.width = self.video.height = size
        self.video.pix_fmt = "yuv420p"
        self.video.options = {"crf": str(crf), "preset": preset}
        self.audio = self.container.add_stream("aac", rate=SAMPLE_RATE)
        self.audio.layout = "mono"
        self.audio_pts = 0

    def write(self, chunk: Chunk) -> None:
        for rgb in chunk.frames:
            self.container.mux(self.video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")))
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

    def __init__(self, size: int = 512, fps: int = 25, crf: int = 23, preset: str = "ultrafast") -> None:
        self.size, self.fps, self.crf, self.preset = size, fps, crf, preset   # live: the fastest x264 preset
        self.init: bytes | None = None
        self.frames = 0

    def encode(self, frames: np.ndarray) -> bytes:
        """H.264 fMP4 bytes of these frames: a keyframe first, timestamps continuing the stream."""
        buffer = io.BytesIO()
        container = av.open(buffer, mode="w", format="mp4",
                            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        stream = container.add_stream("libx264", rate=self.fps)
        stream.width = stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency", "profile": "high"}
        for rgb in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            container.mux(stream.encode(frame))
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


def stream_to_sink(session, audio: np.ndarray, sink: Sink, piece_seconds: float | None = None,
                   on_chunk: "Callable[[Chunk], None] | None" = None) -> None:
    """Feed `audio` to a session (whole, or in pieces as a live source would) and write every chunk.

    The output encode time of each chunk is added to its timings as `output_encode`.
    """
    import time

    step = len(audio) if not piece_seconds else max(1, int(piece_seconds * SAMPLE_RATE))
    for start in range(0, max(len(audio), 1), step):
        session.feed(audio[start: start + step])
        last = start + step >= len(audio)
        for chunk in session.chunks(flush=last):
            t0 = time.perf_counter()
            sink.write(chunk)
            spent = time.perf_counter() - t0
            chunk.timings["output_encode"] = spent
            session.stats.stages["output_encode"] = session.stats.stages.get("output_encode", 0.0) + spent
            if on_chunk is not None:
                on_chunk(chunk)
    sink.close()
