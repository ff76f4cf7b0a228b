"""Media I/O with PyAV: probe, one streaming decode to 25 fps CFR RGB plus 16 kHz mono audio, x264 encode.

The decoder demuxes video and audio in one pass. Video frames come out at a constant frame rate
(nearest source frame for each output tick, as ffmpeg's fps filter does), rotated upright per the
stream's display matrix. Audio is resampled to mono float32 as it arrives and kept for the current
work unit only, so memory does not grow with the length of a source.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile


class MediaError(Exception):
    """A file cannot be used; `reason` is machine-readable, the message says why."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Probe:
    """What a source holds. Sizes are as displayed, after rotation."""

    duration: float
    width: int
    height: int
    rotation: int                 # degrees counter-clockwise applied to decoded frames
    fps: float                    # average frame rate
    vfr: bool                     # variable frame rate (timestamps not evenly spaced)
    video_codec: str
    pix_fmt: str
    has_audio: bool
    audio_rate: int
    audio_channels: int
    start_time: float             # container start time in seconds; times below are relative to it


def probe(path: Path) -> Probe:
    """Read stream facts and decode the first frame; raise MediaError when the file is unusable."""
    path = Path(path)
    if not path.exists():
        raise MediaError("missing_file", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MediaError("empty_file", f"{path}: zero bytes")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError("unreadable", f"{path}: not a readable media file ({err})") from None
    with container:
        if not container.streams.video:
            raise MediaError("no_video", f"{path}: no video stream")
        stream = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        start = container.start_time / 1e6 if container.start_time is not None else 0.0
        duration = _duration(container, stream)
        pts = _first_timestamps(container, stream, 120)
        first = _first_frame(path, stream.index)
        rotation = int(first.rotation or 0) % 360
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else (len(pts) - 1) / (pts[-1] - pts[0]) if len(pts) > 2 else 0.0
        return Probe(
            duration=duration,
            width=width,
            height=height,
            rotation=rotation,
            fps=fps,
            vfr=_is_vfr(pts),
            video_codec=stream.codec_context.name,
            pix_fmt=first.format.name,
            has_audio=audio is not None and (audio.codec_context.sample_rate or 0) > 0,
            audio_rate=int(audio.codec_context.sample_rate or 0) if audio else 0,
            audio_channels=int(audio.codec_context.channels or 0) if audio else 0,
            start_time=start,
        )


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6
    return 0.0


def _first_timestamps(container, stream, count: int) -> list[float]:
    """Presentation times of the first `count` video packets, sorted (demux only, no decode)."""
    times: list[float] = []
    try:
        for packet in container.demux(stream):
            if packet.pts is not None:
                times.append(float(packet.pts * stream.time_base))
            if len(times) >= count:
                break
    except av.FFmpegError:
        pass
    return sorted(times)


def _is_vfr(times: list[float]) -> bool:
    if len(times) < 4:
        return False
    steps = np.diff(np.asarray(times))
    steps = steps[steps > 0]
    return bool(steps.size > 2 and steps.std() > 0.1 * steps.mean())


def _first_frame(path: Path, index: int) -> av.VideoFrame:
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            for frame in container.decode(container.streams.video[index]):
                return frame
    except av.FFmpegError as err:
        raise MediaError("undecodable", f"{path}: the first video frame does not decode ({err})") from None
    raise MediaError("undecodable", f"{path}: no video frame decodes")


class UnitDecoder:
    """Decode [start, end) of a source once: CFR RGB frames, and its audio as 16 kHz mono.

    Iterate `frames()` for (index, rgb) where index counts output frames from time 0 of the source
    (frame i shows time i / fps). `audio(t0, t1)` returns the samples of a time range seen so far.
    """

    def __init__(self, path: Path, start: float, end: float, fps: int, sample_rate: int, info: Probe) -> None:
        self.path, self.start, self.end, self.fps, self.rate, self.info = Path(path), start, end, fps, sample_rate, info
        self._chunks: list[np.ndarray] = []
        self._audio_t0: float | None = None        # source time of the first buffered sample
        self._audio_len = 0

    # --------------------------------------------------------------------------------- video
    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        first = math.ceil(self.start * self.fps - 1e-6)
        last = math.ceil(self.end * self.fps - 1e-6)          # exclusive
        step = 1.0 / max(self.info.fps, 1.0)
        index, held, held_t = first, None, 0.0
        for t, frame in self._decoded():
            if held is not None:
                midpoint = (held_t + t) / 2
                while index < last and index / self.fps < midpoint:
                    yield index, held
                    index += 1
            if index >= last:
                return
            held, held_t = self._rgb(frame), t
        if held is not None:
            while index < last and index / self.fps < held_t + step:
                yield index, held
                index += 1

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        if self.info.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.info.rotation // 90))
        return rgb

    def _decoded(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """(time, frame) of video frames from just before `start`, decoding the audio alongside."""
        with av.open(str(self.path), metadata_errors="ignore") as container:
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            audio = container.streams.audio[0] if container.streams.audio else None
            resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate) if audio else None
            if self.start > 0:
                container.seek(int((self.start + self.info.start_time) / video.time_base), stream=video, backward=True)
            streams = [s for s in (video, audio) if s is not None]
            try:
                for packet in container.demux(*streams):
                    for frame in packet.decode():
                        if frame.pts is None:
                            continue
                        t = float(frame.pts * frame.time_base) - self.info.start_time
                        if isinstance(frame, av.AudioFrame):
                            self._add_audio(t, resampler.resample(frame))
                        elif t >= self.start - 1.0 / max(self.info.fps, 1.0):
                            yield t, frame
                        if t >= self.end + 0.5 and isinstance(frame, av.VideoFrame):
                            return
            except av.FFmpegError as err:
                if not self._chunks and self._audio_len == 0:
                    raise MediaError("undecodable", f"{self.path}: decoding failed ({err})") from None
                # A damaged tail: keep what decoded. The clip ends where the data ends.
            if resampler is not None:
                self._add_audio(None, resampler.resample(None))

    # --------------------------------------------------------------------------------- audio
    def _add_audio(self, t: float | None, frames: list[av.AudioFrame]) -> None:
        for out in frames:
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            if self._audio_t0 is None:
                self._audio_t0 = t if t is not None else 0.0
            self._chunks.append(samples)
            self._audio_len += samples.size

    def audio(self, t0: float, t1: float) -> np.ndarray:
        """Mono float32 samples of [t0, t1) in source seconds; silence where no audio was decoded."""
        n = int(round((t1 - t0) * self.rate))
        out = np.zeros(n, np.float32)
        if self._audio_t0 is None or not self._chunks:
            return out
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        buffer = self._chunks[0]
        offset = int(round((t0 - self._audio_t0) * self.rate))
        lo, hi = max(offset, 0), min(offset + n, buffer.size)
        if hi > lo:
            out[lo - offset : hi - offset] = buffer[lo:hi]
        return out

    def release_audio_before(self, t: float) -> None:
        """Drop buffered audio before source time t (bounded memory on long units)."""
        if self._audio_t0 is None or not self._chunks:
            return
        buffer = np.concatenate(self._chunks)
        cut = int(round((t - self._audio_t0) * self.rate))
        if cut > 0:
            self._chunks = [buffer[cut:].copy()]
            self._audio_t0 += cut / self.rate
        else:
            self._chunks = [buffer]


class ClipEncoder:
    """Encode one clip as it goes: 512x512 (or `size`) H.264 at `fps`, AAC audio added at `close`."""

    def __init__(self, path: Path, size: int, fps: int, sample_rate: int, codec: str = "libx264",
                 preset: str = "veryfast", crf: int = 18, audio_bitrate: int = 64000, threads: int = 0) -> None:
        self.path, self.fps, self.rate = Path(path), fps, sample_rate
        self.container = av.open(str(self.path), mode="w", format="mp4")
        self.video = self.container.add_stream(codec, rate=fps)
        self.video.width = self.video.height = size
        self.video.pix_fmt = "yuv420p"
        options = {"crf": str(crf)}
        if codec.startswith("libx264"):
            options["preset"] = preset
        if threads:
            self.video.codec_context.thread_count = threads
        self.video.options = options
        self.audio = self.container.add_stream("aac", rate=sample_rate, layout="mono")
        self.audio.bit_rate = audio_bitrate
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        frame.time_base = Fraction(1, self.fps)
        self.container.mux(self.video.encode(frame))
        self.frames += 1

    def close(self, audio: np.ndarray) -> None:
        """Flush the video, encode `audio` (mono float32 at the clip's rate) and finish the file."""
        self.container.mux(self.video.encode(None))
        samples = np.clip(audio, -1.0, 1.0).astype(np.float32).reshape(1, -1)
        step = 1024 * 16
        for i in range(0, samples.shape[1], step):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i : i + step]), format="flt", layout="mono")
            frame.sample_rate = self.rate
            frame.pts = i
            frame.time_base = Fraction(1, self.rate)
            self.container.mux(self.audio.encode(frame))
        self.container.mux(self.audio.encode(None))
        self.container.close()

    def abort(self) -> None:
        """Close and delete a clip that was rejected."""
        try:
            self.container.close()
        except av.FFmpegError:
            pass
        self.path.unlink(missing_ok=True)


def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono wav."""
    soundfile.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
