"""Sync-C / Sync-D of one video: SyncNet (`syncnet_v2.model`) scored under a named input protocol.

Scoring reuses the build's SyncNet (`vividhead.models.syncnet`): the reference tool's face crops,
5-frame windows against 20-column MFCC windows, offsets +-vshift; Sync-C = LSE-C, Sync-D = LSE-D, the
AV offset in 25 fps frames. Face boxes come from the build's face detector (SCRFD from local weights,
else mediapipe), the largest face per frame. The protocols differ only in what reaches SyncNet:

- `syncnet_python` (default) feeds SyncNet what joonson/syncnet_python's `run_pipeline.py` +
  `SyncNetInstance.evaluate` feed it, which is what Wav2Lip's LSE-C/LSE-D scripts and the papers
  that copy them report: frames resampled to 25 fps by the rule of `ffmpeg -r 25` into an AVI
  (`ffmpeg_r25_indices`), with the AVI's MP3 audio track's shifts (`mp3_delay`); one face track of
  more than 100 detected frames with a mean face side above 100 px (gaps of up to 25 frames
  interpolated); each 224x224 crop passed through a JPEG round trip at ffmpeg's default MJPEG
  quality (`jpeg_round_trip`); audio as 16-bit PCM.
- `exact` is the lossless path: frames resampled to 25 fps by presentation time (the frame shown at
  each 25 fps tick), every frame of the video, crops and audio as decoded.

Both read audio downmixed by averaging the channels (as `ffmpeg -ac 1` does; `videos.decode_audio_averaged`).
"""

from __future__ import annotations

import fractions
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
import torch

from vividhead.evaluation.videos import Decoded
from vividhead.models import syncnet as sn
from vividhead.models.face_detect import FaceDetector, make_face_detector

SYNC_PROTOCOLS = ("syncnet_python", "exact")
DEFAULT_SYNC_PROTOCOL = "syncnet_python"
MP3_DELAY_SAMPLES = 1105  # LAME's encoder (576) + decoder (529) delay, left untrimmed in an AVI
MIN_TRACK = 100          # run_pipeline.py --min_track: a track needs more detected frames than this
MIN_FACE_SIZE = 100      # run_pipeline.py --min_face_size: mean box side (px) must exceed this
MAX_MISSED = 25          # run_pipeline.py --num_failed_det: missed frames allowed inside a track
TRACK_IOU = 0.5          # track_shot's IOU threshold between consecutive detections


@dataclass(frozen=True)
class SyncResult:
    """One video's SyncNet scores, or the reason it could not be scored."""

    sync_c: float | None = None
    sync_d: float | None = None
    offset: int | None = None
    windows: int = 0
    skipped: str | None = None
    frames: int = 0          # 25 fps face crops that reached SyncNet


# ------------------------------------------------------------------------------ 25 fps resampling
def to_25fps(frames: np.ndarray, fps: float, times: np.ndarray | None = None) -> np.ndarray:
    """The `exact` protocol's resampling of [T, H, W, 3] frames to 25 fps: at each output time, the
    frame shown then (the latest with a presentation time <= t; `times` in seconds, else a constant
    `fps` is assumed)."""
    if times is None:
        if abs(fps - sn.FPS) < 1e-3:
            return frames
        times = np.arange(len(frames)) / fps
    elif len(times) > 1 and np.allclose(np.diff(times), 1.0 / sn.FPS, atol=1e-3):
        return frames                                  # already constant 25 fps
    duration = times[-1] + (times[-1] - times[-2] if len(times) > 1 else 1.0 / sn.FPS)
    out_times = np.arange(int(np.floor(duration * sn.FPS + 1e-6))) / sn.FPS
    idx = np.clip(np.searchsorted(times, out_times + 1e-6, side="right") - 1, 0, len(frames) - 1)
    return frames[idx]


def mp3_delay(audio_rate: int | None) -> float:
    """Seconds by which syncnet_python's AVI delays the audio: ffmpeg writes the AVI's audio as MP3, and
    the encoder + decoder delay of 1105 samples (at the source's sample rate) is never trimmed. 0 when
    there is no audio."""
    return MP3_DELAY_SAMPLES / audio_rate if audio_rate else 0.0


def ffmpeg_r25_indices(times: np.ndarray, durations: np.ndarray | None = None, audio_delay: float = 0.0) -> np.ndarray:
    """Source frame index of each frame syncnet_python sees, from the frames' times in seconds from
    the file's start.

    run_pipeline.py converts with `ffmpeg -i VIDEO -qscale:v 2 -async 1 -r 25 video.avi` and dumps the
    AVI to JPEGs. ffmpeg (checked against 5.1's command line) converts into an AVI with its variable-
    frame-rate sync: a frame is dropped when its end (`t*25 + round(duration*25)`) is at or before
    slot - 0.6, and a frame more than 0.6 slots ahead jumps to slot `round(t*25)`. With an audio
    track, the AVI muxer moves every frame after the first `ceil(audio_delay * 25)` slots later (the
    MP3 track starts `audio_delay` seconds early and timestamps are shifted to be non-negative). The
    JPEG dump fills each jump with copies (the new frame in the last two slots of a gap, the previous
    one before). On a constant 30 fps source this drops one frame in six after the first ten frames.
    """
    times = np.asarray(times, dtype=np.float64)
    if durations is None:
        step = np.diff(times)
        durations = np.append(step, step[-1] if len(step) else 1.0 / sn.FPS)
    slots: list[tuple[int, int]] = []                  # (AVI timestamp, source index)
    next_slot = 0
    for i, (t, d) in enumerate(zip(times * sn.FPS, np.asarray(durations) * sn.FPS, strict=True)):
        length = float(np.rint(d)) or d
        behind = t - next_slot
        if behind < 0 < behind + length:
            t = next_slot                              # clipped to the next free slot
        if behind + length <= -0.6:
            continue                                   # dropped
        if behind + length > 0.6:
            next_slot = int(np.rint(t))
        slots.append((next_slot, i))
        next_slot += 1
    shift = int(np.ceil(audio_delay * sn.FPS - 1e-9))
    slots = slots[:1] + [(stamp + shift, i) for stamp, i in slots[1:]]
    out: list[int] = []
    previous = None
    for stamp, i in slots:                             # the CFR JPEG dump of the AVI
        gap = stamp - len(out)
        copies = int(np.rint(gap + 1)) if gap + 1 > 1.1 else (0 if gap + 1 < -1.1 else 1)
        held = int(np.rint(gap - 0.6)) if gap > 1.1 and previous is not None else 0
        out += [previous] * min(held, copies) + [i] * (copies - min(held, copies))
        previous = i
    return np.asarray(out, dtype=np.int64)


# ----------------------------------------------------------------------------------- face tracks
def face_track(detector: FaceDetector, frames: np.ndarray) -> np.ndarray:
    """[T, 4] boxes (x0, y0, x1, y1) of the largest face per frame, NaN where none was found."""
    boxes = np.full((len(frames), 4), np.nan)
    for i, frame in enumerate(frames):
        faces = detector(np.ascontiguousarray(frame))
        if faces:
            best = max(faces, key=lambda f: f.side)
            boxes[i] = (best.x0, best.y0, best.x1, best.y1)
    return boxes


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def reference_track(boxes: np.ndarray) -> tuple[int, int] | str:
    """The frame range [start, end) syncnet_python would score, or why it scores none.

    Detections join a track while they are at most 25 frames after the previous one and overlap it
    (IOU > 0.5); a track counts with more than 100 detections and a mean box side above 100 px. Of the
    tracks that count, the longest is scored (the reference scores each; this is one face per video).
    """
    found = np.flatnonzero(~np.isnan(boxes).any(axis=1))
    runs: list[list[int]] = []
    for i in found:
        if runs and i - runs[-1][-1] <= MAX_MISSED and _iou(boxes[runs[-1][-1]], boxes[i]) > TRACK_IOU:
            runs[-1].append(int(i))
        else:
            runs.append([int(i)])
    long_enough = [r for r in runs if len(r) > MIN_TRACK]
    if not long_enough:
        return f"no face track longer than {MIN_TRACK} frames (syncnet_python's --min_track; longest {max(map(len, runs), default=0)})"
    sides = [np.maximum(boxes[r, 2] - boxes[r, 0], boxes[r, 3] - boxes[r, 1]).mean() for r in long_enough]
    kept = [r for r, side in zip(long_enough, sides, strict=True) if side > MIN_FACE_SIZE]
    if not kept:
        return f"faces too small: mean side {max(sides):.0f} px <= {MIN_FACE_SIZE} (syncnet_python's --min_face_size)"
    best = max(kept, key=lambda r: r[-1] - r[0])
    return best[0], best[-1] + 1


# ------------------------------------------------------------------------------------ JPEG, PCM
def jpeg_round_trip(images_bgr: np.ndarray, fps: int = sn.FPS) -> np.ndarray:
    """[N, H, W, 3] BGR uint8 through ffmpeg's default JPEG encoding and back, as syncnet_python's
    `ffmpeg -i crop.avi -f image2 %06d.jpg` + `cv2.imread` does.

    ffmpeg's MJPEG encoder without `-q:v` runs its rate control at the default 200 kb/s over the
    sequence (quality falls over the first ~12 frames, then holds), from 4:2:0 video as the crop AVI
    holds it; the JPEGs are decoded with OpenCV's libjpeg, as `cv2.imread` reads them.
    """
    if len(images_bgr) == 0:
        return images_bgr
    _, height, width, _ = images_bgr.shape
    encoder = av.CodecContext.create("mjpeg", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuvj420p"
    encoder.time_base = fractions.Fraction(1, fps)
    encoder.framerate = fractions.Fraction(fps, 1)
    packets = []
    for i, image in enumerate(images_bgr):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        frame = frame.reformat(format="yuv420p").reformat(format="yuvj420p")
        frame.pts = i
        packets += [bytes(p) for p in encoder.encode(frame)]
    packets += [bytes(p) for p in encoder.encode(None)]
    return np.stack([cv2.imdecode(np.frombuffer(p, np.uint8), cv2.IMREAD_COLOR) for p in packets])


def to_pcm16(audio: np.ndarray) -> np.ndarray:
    """Float audio quantised as the 16-bit WAV the reference reads (round to nearest, clipped)."""
    return np.clip(np.rint(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767) / 32768.0


# ---------------------------------------------------------------------------------------- scorer
class SyncScorer:
    """SyncNet from local weights plus a face detector; `score` gives one video's SyncResult."""

    def __init__(self, weights: Path, device: torch.device, scrfd: Path | None = None, vshift: int = 15,
                 protocol: str = DEFAULT_SYNC_PROTOCOL) -> None:
        if protocol not in SYNC_PROTOCOLS:
            raise ValueError(f"unknown Sync protocol {protocol!r}; choose from {', '.join(SYNC_PROTOCOLS)}")
        self.model: sn.SyncNet = sn.load_syncnet(weights, device)
        self.detector = make_face_detector("auto", scrfd)
        self.vshift = vshift
        self.protocol = protocol

    def score(self, video: Decoded) -> SyncResult:
        if video.audio is None or len(video.audio) == 0:
            return SyncResult(skipped="no audio")
        if self.protocol == "exact":
            frames, audio = to_25fps(video.frames, video.fps, video.times), video.audio
            boxes = face_track(self.detector, frames)
            crops = sn.crop_faces(frames, boxes)
            if crops is None:
                return SyncResult(skipped="no face detected")
        else:
            times = video.times if video.times is not None else np.arange(len(video.frames)) / video.fps
            delay = mp3_delay(video.audio_rate)
            frames = video.frames[ffmpeg_r25_indices(video.start + times, audio_delay=delay)]
            boxes = face_track(self.detector, frames)
            track = reference_track(boxes)
            if isinstance(track, str):
                return SyncResult(skipped=track)
            start, end = track
            per_frame = sn.SAMPLE_RATE // sn.FPS
            crops = jpeg_round_trip(sn.crop_faces(frames[start:end], boxes[start:end]))
            audio = np.concatenate([np.zeros(int(round(delay * sn.SAMPLE_RATE)), np.float32), video.audio])
            audio = to_pcm16(audio[start * per_frame: end * per_frame])
        try:
            lip, aud = sn.embed(self.model, crops, audio)
        except ValueError as error:          # too short for one 5-frame window
            return SyncResult(skipped=str(error))
        result = sn.offset_scores(lip, aud, self.vshift)
        return SyncResult(result.lse_c, result.lse_d, result.offset, result.n_windows, frames=len(crops))

    def close(self) -> None:
        self.detector.close()
