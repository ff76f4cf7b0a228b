"""The built-in demo corpus: talking-head videos generated locally, with no download.

The face is scikit-image's public-domain astronaut photo (NASA, Eileen Collins). Each video moves
the head slowly and opens the jaw with the envelope of a synthesised speech-like voice (glottal
pulses through vowel formant filters, in syllables and pauses), so lip motion follows the audio.
Negatives: a faceless video with the same kind of voice-over, and a scene cut into a piece too
short to keep. One source lists given time ranges, as datasets with timestamps do.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import yaml
from scipy import signal

FPS = 25
AUDIO_RATE = 44100
SIZE = (960, 540)
# Astronaut photo landmarks (512x512 image): the mouth line, the lip corners and the face centre.
MOUTH_Y, MOUTH_X0, MOUTH_X1 = 146, 196, 252
FACE_CENTER = (225, 120)
VOWELS = ((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480), (570, 840, 2410),
          (440, 1020, 2240), (660, 1720, 2410))


@dataclass(frozen=True)
class Take:
    """One generated video: a list of shots (seconds, look) and its voice."""

    name: str
    shots: tuple[tuple[float, str], ...]
    pitch: float
    seed: int


TAKES = (
    Take("talk_anna", ((7.0, "front"),), 190.0, 1),
    Take("talk_ben", ((7.0, "mirror"),), 115.0, 2),
    Take("talk_cut", ((6.5, "close"), (3.5, "wide")), 160.0, 3),
    Take("talk_ranges", ((12.0, "front"),), 140.0, 4),
    Take("no_face", ((6.0, "faceless"),), 170.0, 5),
)


def speech_like(seconds: float, pitch: float, rng: np.random.Generator, rate: int = AUDIO_RATE
                ) -> tuple[np.ndarray, np.ndarray]:
    """A voice-like signal and its amplitude envelope (both at `rate`)."""
    n = int(seconds * rate)
    envelope = np.zeros(n, np.float32)
    syllables = []
    t = 0.15
    while t < seconds - 0.2:
        length = rng.uniform(0.12, 0.32)
        a, b = int(t * rate), min(n, int((t + length) * rate))
        envelope[a:b] = np.sin(np.linspace(0, np.pi, b - a)) ** 0.7
        syllables.append((a, b, VOWELS[rng.integers(len(VOWELS))]))
        t += length + (rng.uniform(0.25, 0.6) if rng.random() < 0.2 else rng.uniform(0.02, 0.08))
    # glottal pulse train with a slowly drifting pitch
    f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * np.arange(n) / rate)) * (1 + 0.01 * rng.standard_normal(n))
    phase = np.cumsum(f0 / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(np.float32)
    source = signal.lfilter([1.0], [1.0, -0.97], pulses) + 0.02 * rng.standard_normal(n)
    voice = np.zeros(n, np.float32)
    for a, b, formants in syllables:       # each syllable: the pulses through its vowel's formants
        for k, freq in enumerate(formants):
            num, den = signal.iirpeak(freq, Q=freq / 90.0, fs=rate)
            voice[a:b] += signal.lfilter(num, den, source[a:b]).astype(np.float32) / (k + 1)
    voice *= envelope
    voice /= max(np.abs(voice).max(), 1e-6) / 0.5
    return voice.astype(np.float32), envelope


def _open_jaw(face: np.ndarray, amount: float) -> np.ndarray:
    """Pull the lower lip and chin down by `amount` pixels (of the 512 photo), stretching the mouth."""
    if amount <= 0.05:
        return face
    y0, y1, x0, x1 = MOUTH_Y - 12, MOUTH_Y + 50, MOUTH_X0 - 22, MOUTH_X1 + 22
    ys, xs = np.mgrid[y0:y1, x0:x1].astype(np.float32)
    across = np.clip(1 - np.abs((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)), 0, 1) ** 0.8
    below = np.clip((ys - (MOUTH_Y - 6)) / 8, 0, 1) * np.clip((y1 - ys) / 30, 0, 1)
    shift = amount * across * below
    out = face.copy()
    out[y0:y1, x0:x1] = cv2.remap(face, xs, ys - shift, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    gap = (shift > 1.0) & (np.abs(ys - MOUTH_Y) < shift * 0.6)
    region = out[y0:y1, x0:x1]
    region[gap] = (region[gap] * 0.35).astype(np.uint8)
    return out


def _frame(photo: np.ndarray, look: str, t: float, jaw: float) -> np.ndarray:
    if look == "faceless":
        return _faceless(t)
    face = _open_jaw(photo, jaw)
    scale = {"front": 2.4, "mirror": 2.2, "close": 2.8, "wide": 1.2}[look]
    angle = 2.0 * np.sin(2 * np.pi * 0.23 * t)
    cx, cy = FACE_CENTER
    matrix = cv2.getRotationMatrix2D((cx, cy), angle, scale)
    matrix[0, 2] += SIZE[0] / 2 - cx + 18 * np.sin(2 * np.pi * 0.11 * t)
    matrix[1, 2] += SIZE[1] / 2 - cy + 10 * np.sin(2 * np.pi * 0.17 * t)
    frame = cv2.warpAffine(face, matrix, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if look == "mirror":
        frame = np.ascontiguousarray(frame[:, ::-1] * np.array([1.0, 0.92, 0.8])).astype(np.uint8)
    if look == "wide":
        frame = cv2.cvtColor(255 - cv2.cvtColor(frame, cv2.COLOR_RGB2HSV), cv2.COLOR_HSV2RGB)
    return frame


def _faceless(t: float) -> np.ndarray:
    w, h = SIZE
    ys, xs = np.mgrid[0:h:4, 0:w:4].astype(np.float32)
    r = 127 + 120 * np.sin(xs / 60 + t * 1.3)
    g = 127 + 120 * np.sin(ys / 45 - t * 0.9)
    b = 127 + 120 * np.sin((xs + ys) / 80 + t * 0.5)
    small = np.stack([r, g, b], -1).astype(np.uint8)
    return cv2.resize(small, SIZE, interpolation=cv2.INTER_LINEAR)


def write_take(take: Take, path: Path, photo: np.ndarray) -> None:
    """Encode one take: H.264 video at 25 fps, AAC stereo audio at 44.1 kHz."""
    rng = np.random.default_rng(take.seed)
    seconds = sum(length for length, _ in take.shots)
    voice, envelope = speech_like(seconds, take.pitch, rng)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "20"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        index, shot_start = 0, 0.0
        for length, look in take.shots:
            while index < round((shot_start + length) * FPS):
                t = index / FPS
                jaw = 9.0 * float(envelope[min(len(envelope) - 1, int(t * AUDIO_RATE))])
                frame = av.VideoFrame.from_ndarray(_frame(photo, look, t, jaw), format="rgb24")
                frame.pts, frame.time_base = index, Fraction(1, FPS)
                container.mux(video.encode(frame))
                index += 1
            shot_start += length
        container.mux(video.encode(None))
        stereo = np.stack([voice, voice * 0.9]).astype(np.float32)
        for start in range(0, stereo.shape[1], 4096):
            chunk = av.AudioFrame.from_ndarray(np.ascontiguousarray(stereo[:, start : start + 4096]), format="fltp",
                                               layout="stereo")
            chunk.sample_rate, chunk.pts, chunk.time_base = AUDIO_RATE, start, Fraction(1, AUDIO_RATE)
            container.mux(audio.encode(chunk))
        container.mux(audio.encode(None))


def astronaut() -> np.ndarray:
    """scikit-image's astronaut photo (public domain, ships inside the package)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[..., :3])


def make_demo_corpus(folder: Path) -> Path:
    """Write the demo videos and their sources.yaml into `folder` (reused when already there)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo = astronaut()
    for take in TAKES:
        path = folder / f"{take.name}.mp4"
        if not path.exists():
            tmp = folder / f".{take.name}.tmp.mp4"
            write_take(take, tmp, photo)
            tmp.replace(path)
    sources = {"sources": [
        {"path": "talk_anna.mp4", "dataset": "demo", "attributes": {"gender": "female"}},
        {"path": "talk_ben.mp4", "dataset": "demo"},
        {"path": "talk_cut.mp4", "dataset": "demo"},
        {"path": "talk_ranges.mp4", "dataset": "demo-timestamped", "ranges": [[0.0, 6.0], [6.0, 12.0]]},
        {"path": "no_face.mp4", "dataset": "demo"},
    ]}
    target = folder / "sources.yaml"
    target.write_text("# The built-in demo corpus (generated by vividhead.demo).\n" + yaml.safe_dump(sources, sort_keys=False))
    return target
