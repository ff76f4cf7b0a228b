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
    Take("talk_anna", ((6.0, "front"),), 190.0, 2),
    Take("talk_ben", ((6.0, "mirror"),), 170.0, 5),
    Take("talk_cut", ((6.0, "close"), (2.5, "wide")), 220.0, 7),
    Take("talk_ranges", ((11.0, "front"),), 200.0, 8),
    Take("no_face", ((5.5, "faceless"),), 180.0, 2),
)


def speech_like(seconds: float, pitch: float, rng: np.random.Generator, rate: int = 16000
                ) -> tuple[np.ndarray, np.ndarray]:
    """A voice-like signal and its amplitude envelope (both at `rate`).

    Words of 1-3 syllables: an optional noise burst (consonant), then a voiced vowel whose formants
    glide from the previous one; falling pitch over each word; short gaps and occasional pauses.
    Synthesised in 10 ms blocks through three resonators whose state carries across blocks.
    """
    n, hop = int(seconds * rate), rate // 100
    blocks = n // hop + 1
    voiced, noisy = np.zeros(blocks), np.zeros(blocks)
    formants = np.tile(np.asarray(VOWELS[0], float), (blocks, 1))
    f0 = np.full(blocks, pitch)
    b = 12
    while b < blocks - 30:
        word_start = b
        for _ in range(int(rng.integers(1, 4))):
            if rng.random() < 0.6:
                burst = int(rng.uniform(3, 7))
                noisy[b : b + burst] = 0.5
                b = min(b + burst, blocks - 1)
            length = int(rng.uniform(14, 26))
            end = min(blocks, b + length)
            voiced[b:end] = np.sin(np.linspace(0.15, np.pi - 0.15, end - b)) ** 0.5
            formants[b:end] = VOWELS[rng.integers(len(VOWELS))]
            b = end
        b = min(b, blocks)
        f0[word_start:b] = pitch * np.linspace(1.15, 0.85, b - word_start) * (1 + 0.05 * rng.standard_normal())
        b += int(rng.uniform(25, 45)) if rng.random() < 0.15 else int(rng.uniform(4, 10))
    kernel = np.hanning(7) / np.hanning(7).sum()
    formants = np.stack([np.convolve(formants[:, i], kernel, mode="same") for i in range(3)], 1)
    phase = np.cumsum(np.repeat(f0, hop)[:n] / rate)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    glottal = signal.lfilter([1, -1], [1], signal.lfilter([1], [1, -0.95], pulses))
    noise = rng.standard_normal(n)
    out = np.zeros(n)
    states = [np.zeros(2) for _ in range(3)]
    for j in range(blocks):
        part = slice(j * hop, min(n, (j + 1) * hop))
        if part.start >= n:
            break
        excitation = glottal[part] * voiced[j] + noise[part] * noisy[j] * 0.3
        for i, bandwidth in enumerate((80, 100, 140)):
            r, theta = np.exp(-np.pi * bandwidth / rate), 2 * np.pi * formants[j, i] / rate
            y, states[i] = signal.lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], excitation, zi=states[i])
            out[part] += y / (i + 1) ** 0.5
    out /= max(np.abs(out).max(), 1e-9) / 0.6
    envelope = np.repeat(np.maximum(voiced, noisy * 0.5), hop)[:n]
    return out.astype(np.float32), envelope.astype(np.float32)


def _open_jaw(face: np.ndarray, amount: float) -> np.ndarray:
    """Open the mouth by `amount` pixels (of the 512 photo): the lip gap stretches, the lower lip drops."""
    if amount <= 0.05:
        return face
    top, gap_top, gap_bottom = MOUTH_Y - 12, MOUTH_Y - 4, MOUTH_Y + 4        # upper lip | gap | lower lip
    bottom = MOUTH_Y + 30
    x0, x1 = MOUTH_X0 - 10, MOUTH_X1 + 10
    ys, xs = np.mgrid[top:bottom, x0:x1].astype(np.float32)
    src = np.where(ys < gap_top, ys,
                   np.where(ys < gap_bottom + amount,
                            gap_top + (ys - gap_top) * (gap_bottom - gap_top) / (gap_bottom - gap_top + amount),
                            ys - amount))
    moved = cv2.remap(face, xs, src.astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    across = np.clip(1 - np.abs((xs - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2, 0, 1)
    down = np.clip((bottom - ys) / 12, 0, 1)
    alpha = (across * down)[..., None]
    out = face.copy()
    out[top:bottom, x0:x1] = (alpha * moved + (1 - alpha) * face[top:bottom, x0:x1]).astype(np.uint8)
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
    voice16, envelope = speech_like(seconds, take.pitch, rng)
    voice = signal.resample_poly(voice16, AUDIO_RATE // 100, 160).astype(np.float32)
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=FPS)
        video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "20"}
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        index, shot_start = 0, 0.0
        for length, look in take.shots:
            while index < round((shot_start + length) * FPS):
                t = index / FPS
                jaw = 9.0 * float(envelope[min(len(envelope) - 1, int(t * 16000))])
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
        {"path": "talk_ranges.mp4", "dataset": "demo-timestamped", "ranges": [[0.0, 5.5], [5.5, 11.0]]},
        {"path": "no_face.mp4", "dataset": "demo"},
    ]}
    target = folder / "sources.yaml"
    target.write_text("# The built-in demo corpus (generated by vividhead.demo).\n" + yaml.safe_dump(sources, sort_keys=False))
    return target
