"""Media I/O, the one place that decodes and encodes: video with PyAV, PNG with OpenCV, WAV, NPY.

- `probe` reads a file's stream facts; `frames` decodes a video's frames in order and
  `frames_at` seeks to a few times; `decode_audio` gives 16 kHz (or any rate) mono float32.
  Each takes a path or the file's bytes (a shard member), and picks streams by type, never by
  position, so a file whose first stream is audio decodes like any other.
- `UnitDecoder` is the build's single decode pass: it demuxes video and audio once; video frames
  come out at a constant frame rate (nearest source frame for each output tick, as ffmpeg's fps
  filter does; `frame_at` numbers them from time 0 of the source, so a pass started later gives
  the same frames), rotated upright per the stream's display matrix; audio is kept as mono float32
  at the source's rate, from the current clip on only, so memory does not grow with the length of a
  source, and each clip's range is resampled on its own: its samples do not depend on where the
  pass began. `ClipEncoder` writes a clip as H.264 + AAC as it goes.
- `png_bytes` / `read_png`, `npy_bytes` / `read_npy`, `wav_bytes` / `write_wav` / `read_wav`
  encode and decode the other members of a sample.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import cv2
import numpy as np
import soundfile

MediaSource = Path | str | bytes      # a file on disk, or a whole file's bytes
AUDIO_MARGIN = 0.01                   # seconds of source audio each side of a clip that its resampling sees


class MediaError(ValueError):
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


def _name(source: MediaSource, origin: str | None = None) -> str:
    return origin or (f"<{len(source)} bytes>" if isinstance(source, bytes) else str(source))


def open_media(source: MediaSource, origin: str | None = None) -> av.container.InputContainer:
    """Open a media file from a path or bytes; MediaError names `origin` (default: the path)."""
    name = _name(source, origin)
    if isinstance(source, bytes):
        if not source:
            raise MediaError("empty_file", f"{name}: zero bytes")
        handle: str | io.BytesIO = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise MediaError("missing_file", f"{name}: no such file")
        if path.stat().st_size == 0:
            raise MediaError("empty_file", f"{name}: zero bytes")
        handle = str(path)
    try:
        return av.open(handle, metadata_errors="ignore")
    except (av.FFmpegError, UnicodeDecodeError) as err:
        raise MediaError("unreadable", f"{name}: not a readable media file ({err})") from None


def _video_stream(container: av.container.InputContainer, name: str) -> av.video.stream.VideoStream:
    """The first video stream, found by type (an audio stream may come first)."""
    if not container.streams.video:
        raise MediaError("no_video", f"{name}: no video stream")
    return container.streams.video[0]


def probe(source: MediaSource, origin: str | None = None) -> Probe:
    """Read stream facts and decode the first frame; raise MediaError when the file is unusable."""
    name = _name(source, origin)
    with open_media(source, origin) as container:
        stream = _video_stream(container, name)
        audio = container.streams.audio[0] if container.streams.audio else None
        start = container.start_time / 1e6 if container.start_time is not None else 0.0
        duration = _duration(container, stream)
        pts = _first_timestamps(container, stream, 120)
        first = _first_frame(source, name)
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


def _first_frame(source: MediaSource, name: str) -> av.VideoFrame:
    try:
        with open_media(source, name) as container:
            for frame in container.decode(_video_stream(container, name)):
                return frame
    except av.FFmpegError as err:
        raise MediaError("undecodable", f"{name}: the first video frame does not decode ({err})") from None
    raise MediaError("undecodable", f"{name}: no video frame decodes")


class Frame(NamedTuple):
    """One decoded video frame: its number in decode order, its time in seconds and its pixels."""

    index: int
    time: float | None
    image: np.ndarray


def _decoded(source: MediaSource, origin: str | None) -> Iterator[av.VideoFrame]:
    """The video frames of a path or bytes in decode order; a decode error raises MediaError."""
    name = _name(source, origin)
    with open_media(source, origin) as container:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        count = 0
        try:
            for frame in container.decode(stream):
                yield frame
                count += 1
        except av.FFmpegError as err:
            raise MediaError("undecodable", f"{name}: decoding failed after {count} frames ({err})") from None


def frames(source: MediaSource, pixel_format: str = "rgb24", keep: Callable[[int], bool] | None = None,
           stop: int | None = None, origin: str | None = None) -> Iterator[Frame]:
    """Decode the video frames of a path or bytes in order, as they are stored (no rate change).

    Only frames where `keep(index)` is true are converted to pixels; decoding ends before frame
    `stop` (at least 1). A decode error raises MediaError after the frames before it were yielded.
    """
    for index, frame in enumerate(_decoded(source, origin)):
        if keep is None or keep(index):
            yield Frame(index, frame.time, frame.to_ndarray(format=pixel_format))
        if stop is not None and index + 1 >= stop:
            return


def count_frames(source: MediaSource, origin: str | None = None) -> int:
    """How many video frames decode (all of them are decoded; none is converted to pixels)."""
    return sum(1 for _ in _decoded(source, origin))


def frames_at(source: MediaSource, times: list[float], pixel_format: str = "rgb24",
              origin: str | None = None) -> list[np.ndarray]:
    """The first frame at or after each time (seconds), seeking to the keyframe before it."""
    name = _name(source, origin)
    images = []
    with open_media(source, origin) as container:
        stream = _video_stream(container, name)
        stream.thread_type = "AUTO"
        try:
            for target in times:
                offset = int(target / stream.time_base) if stream.time_base else 0
                container.seek(max(offset, 0), stream=stream, backward=True, any_frame=False)
                chosen = None
                for frame in container.decode(stream):
                    chosen = frame
                    if frame.time is None or frame.time >= target - 1e-3:
                        break
                if chosen is not None:
                    images.append(chosen.to_ndarray(format=pixel_format))
        except av.FFmpegError as err:
            raise MediaError("undecodable", f"{name}: decoding failed ({err})") from None
    return images


def decode_audio(source: MediaSource, sample_rate: int = 16000, origin: str | None = None,
                 max_seconds: float | None = None, average_channels: bool = False) -> np.ndarray | None:
    """The first audio stream as mono float32 at `sample_rate`; None when the file has no audio.

    Mono is libswresample's downmix matrix, or with `average_channels` the mean of the channels
    (what `ffmpeg -ac 1` gives; for stereo it is sqrt(2) quieter than the matrix).
    With `max_seconds`, a longer declared duration, or decoded output passing the cap, raises
    MediaError("too_long") as soon as it is seen, so memory stays bounded by the cap.
    """
    name = _name(source, origin)
    with open_media(source, origin) as container:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        declared = float(stream.duration * stream.time_base) if stream.duration and stream.time_base else None
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise MediaError("too_long", f"{name}: {declared:.0f} s of audio; the cap is {max_seconds:g} s")
        limit = None if max_seconds is None else int(max_seconds * sample_rate)
        if average_channels:      # planar, channel layout kept: [channels, samples] per frame
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            mono: Callable[[av.AudioFrame], np.ndarray] = lambda out: out.to_ndarray().mean(axis=0)  # noqa: E731
        else:
            resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
            mono = lambda out: out.to_ndarray().reshape(-1)  # noqa: E731
        chunks: list[np.ndarray] = []
        total = 0
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(mono(out))
                    total += chunks[-1].size
                if limit is not None and total > limit:
                    raise MediaError("too_long", f"{name}: more than {max_seconds:g} s of audio (the cap); "
                                                 "decoding stopped there")
            chunks.extend(mono(out) for out in resampler.resample(None))
        except av.FFmpegError as err:
            raise MediaError("undecodable", f"{name}: the audio stream does not decode ({err})") from None
    return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)


def frame_at(t: float, fps: float) -> int:
    """The first constant-rate frame at or after source time t (frame i shows time i / fps)."""
    return math.ceil(t * fps - 1e-6)


class UnitDecoder:
    """Decode [start, end) of a source once: CFR RGB frames, and its audio as 16 kHz mono.

    Iterate `frames()` for (index, rgb) where index counts output frames from time 0 of the source
    (frame i shows time i / fps). `audio(t0, t1)` returns the samples of a time range, decoding the
    audio up to it as needed. The audio is decoded from `audio_from` (default `start`) on, as it is
    for a pass over the whole unit, because an AAC decoder's noise-filled bands depend on where
    decoding began; samples before `start` are dropped as they come.
    """

    def __init__(self, path: Path, start: float, end: float, fps: int, sample_rate: int, info: Probe,
                 audio_from: float | None = None) -> None:
        self.path, self.start, self.end, self.fps, self.rate, self.info = Path(path), start, end, fps, sample_rate, info
        self.audio_from = start if audio_from is None else audio_from
        self._chunks: list[np.ndarray] = []         # mono float32 at the source's rate
        self._audio_t0: float | None = None        # source time of the first buffered sample
        self._audio_len = 0
        self._source_rate = info.audio_rate
        self._audio_frames: Iterator[tuple[float | None, np.ndarray]] | None = None
        self._floor = start - self._margin()       # audio before this source time is not kept

    # --------------------------------------------------------------------------------- video
    def frames(self) -> Iterator[tuple[int, np.ndarray]]:
        first, last = frame_at(self.start, self.fps), frame_at(self.end, self.fps)      # last: exclusive
        step = 1.0 / max(self.info.fps, 1.0)
        index, held, held_t, shown = first, None, 0.0, None   # shown: `held` as RGB, made once it is shown
        for t, frame in self._decoded():
            if held is not None:
                midpoint = (held_t + t) / 2
                while index < last and index / self.fps < midpoint:
                    shown = self._rgb(held) if shown is None else shown
                    yield index, shown
                    index += 1
            if index >= last:
                return
            held, held_t, shown = frame, t, None       # a frame the rate change drops is never converted
        if held is not None:
            while index < last and index / self.fps < held_t + step:
                shown = self._rgb(held) if shown is None else shown
                yield index, shown
                index += 1

    def _rgb(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        if self.info.rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=self.info.rotation // 90))
        return rgb

    def _decoded(self) -> Iterator[tuple[float, av.VideoFrame]]:
        """(time, frame) of video frames from just before `start`."""
        count = 0
        with open_media(self.path) as container:
            video = _video_stream(container, str(self.path))
            video.thread_type = "AUTO"
            if self.start > 0:
                container.seek(int((self.start + self.info.start_time) / video.time_base), stream=video, backward=True)
            try:
                for packet in container.demux(video):
                    for frame in packet.decode():
                        if frame.pts is None:
                            continue
                        t = float(frame.pts * frame.time_base) - self.info.start_time
                        if t >= self.start - 1.0 / max(self.info.fps, 1.0):
                            count += 1
                            yield t, frame
                        if t >= self.end + 0.5:
                            return
            except av.FFmpegError as err:
                if count == 0:
                    raise MediaError("undecodable", f"{self.path}: decoding failed ({err})") from None
                # A damaged tail: keep what decoded. The clip ends where the data ends.

    # --------------------------------------------------------------------------------- audio
    def _decoded_audio(self) -> Iterator[tuple[float | None, np.ndarray]]:
        """(time, mono float32 samples at the source's rate) of the audio from `audio_from` on."""
        with open_media(self.path) as container:
            if not container.streams.audio:
                return
            audio = container.streams.audio[0]
            self._source_rate = audio.codec_context.sample_rate or self._source_rate
            downmix = av.AudioResampler(format="flt", layout="mono", rate=self._source_rate)
            if self.audio_from > 0:
                container.seek(int((self.audio_from + self.info.start_time) / audio.time_base), stream=audio,
                               backward=True)
            try:
                for packet in container.demux(audio):
                    for frame in packet.decode():
                        if frame.pts is not None:
                            t = float(frame.pts * frame.time_base) - self.info.start_time
                            yield from ((t, out.to_ndarray().reshape(-1)) for out in downmix.resample(frame))
            except av.FFmpegError:
                pass                   # a damaged tail: the audio ends where the data ends (silence after it)
            yield from ((None, out.to_ndarray().reshape(-1)) for out in downmix.resample(None))

    def _decode_audio_to(self, t: float) -> None:
        """Decode the audio up to source time t (or its end), keeping what lies after the floor."""
        if self._audio_frames is None:
            self._audio_frames = self._decoded_audio()
        while self._audio_t0 is None or self._audio_t0 + self._audio_len / self._source_rate < t:
            item = next(self._audio_frames, None)
            if item is None:
                break
            at, samples = item
            if self._audio_len == 0:                      # nothing kept: this frame starts the buffer
                if at is not None and at + samples.size / self._source_rate < self._floor:
                    continue
                self._audio_t0 = at if at is not None else self._floor if self._audio_t0 is None else self._audio_t0
            self._chunks.append(samples.astype(np.float32, copy=False))
            self._audio_len += samples.size
            if self._audio_t0 + self._audio_len / self._source_rate < self._floor:
                self._chunks, self._audio_len = [], 0     # all of it lies before the floor
        self._trim()

    def _trim(self) -> None:
        """Drop buffered audio before the floor."""
        if self._audio_t0 is None or not self._chunks:
            return
        buffer = np.concatenate(self._chunks) if len(self._chunks) > 1 else self._chunks[0]
        cut = min(buffer.size, int(round((self._floor - self._audio_t0) * self._source_rate)))
        if cut > 0:
            buffer = buffer[cut:].copy()
            self._audio_t0 += cut / self._source_rate
        self._chunks, self._audio_len = [buffer], buffer.size

    def audio(self, t0: float, t1: float) -> np.ndarray:
        """Mono float32 samples of [t0, t1) in source seconds at `sample_rate`; silence where no audio was decoded.

        The range (with a short margin each side, so the resampling filter sees real neighbours) is
        resampled on its own, its first output sample on t0: the result depends only on the source
        samples around the range, not on where decoding began.
        """
        n = int(round((t1 - t0) * self.rate))
        self._decode_audio_to(t1 + AUDIO_MARGIN)
        if self._audio_t0 is None or not self._chunks or n <= 0:
            return np.zeros(max(n, 0), np.float32)
        if len(self._chunks) > 1:
            self._chunks = [np.concatenate(self._chunks)]
        source, rate = self._chunks[0], self._source_rate
        before = round(self._margin() * rate)
        first = int(round((t0 - self._audio_t0) * rate)) - before
        count = before + int(math.ceil((t1 - t0) * rate)) + round(AUDIO_MARGIN * rate)
        window = np.zeros(count, np.float32)
        lo, hi = max(first, 0), min(first + count, source.size)
        if hi > lo:
            window[lo - first : hi - first] = source[lo:hi]
        frame = av.AudioFrame.from_ndarray(window.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=self.rate)
        out = [o.to_ndarray().reshape(-1) for o in (*resampler.resample(frame), *resampler.resample(None))]
        samples = np.concatenate(out) if out else np.zeros(0, np.float32)
        skip = before * self.rate // rate
        clip = np.zeros(n, np.float32)
        got = samples[skip : skip + n]
        clip[: got.size] = got
        return clip

    def release_audio_before(self, t: float) -> None:
        """Drop buffered audio before source time t, less the margin `audio` reads (bounded memory on long units)."""
        self._floor = max(self._floor, t - self._margin())
        self._trim()

    def _margin(self) -> float:
        """Seconds of source audio `audio` reads before a clip: at least AUDIO_MARGIN, and a whole number of
        both sample periods, so the resampled output lands on the clip's own sample grid."""
        rate = self._source_rate
        if rate <= 0:
            return AUDIO_MARGIN
        step = rate // math.gcd(rate, self.rate)               # source samples per whole number of output samples
        return step * math.ceil(AUDIO_MARGIN * rate / step) / rate


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


# ------------------------------------------------------------------------------------ sample members
def write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    """16-bit PCM mono wav."""
    soundfile.write(str(path), np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")


def wav_bytes(audio: np.ndarray, sample_rate: int) -> bytes:
    """16-bit PCM mono wav, as bytes."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


def read_wav(source: MediaSource, sample_rate: int, origin: str | None = None) -> np.ndarray:
    """A wav (path or bytes) as mono float32; another sample rate is a MediaError naming the file."""
    name = _name(source, origin)
    try:
        audio, rate = soundfile.read(io.BytesIO(source) if isinstance(source, bytes) else str(source),
                                     dtype="float32", always_2d=True)
    except (OSError, RuntimeError, soundfile.LibsndfileError) as err:
        raise MediaError("unreadable", f"{name}: not a readable wav ({err})") from None
    if rate != sample_rate:
        raise MediaError("sample_rate", f"{name}: wav is {rate} Hz, expected {sample_rate} Hz")
    return audio.mean(axis=1)


def png_bytes(image: np.ndarray) -> bytes:
    """A PNG of an 8-bit image (grey [H, W] or BGR [H, W, 3])."""
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise MediaError("encode", f"cannot encode a {image.shape} {image.dtype} image as PNG")
    return encoded.tobytes()


def read_png(data: bytes, grey: bool = False) -> np.ndarray | None:
    """The image of PNG (or JPEG) bytes, as stored or as grey; None when the bytes do not decode."""
    if not data:
        return None
    flags = cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_UNCHANGED
    return cv2.imdecode(np.frombuffer(data, np.uint8), flags)


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as .npy bytes (no pickled objects)."""
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def read_npy(data: bytes) -> np.ndarray:
    """The array of .npy bytes (no pickled objects)."""
    return np.load(io.BytesIO(data), allow_pickle=False)
