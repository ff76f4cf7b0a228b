"""Per-video-frame audio features for FlashHead, computed the way the streaming engine sees audio.

Two encoders share one interface, `encoder(audio_16k, n_frames) -> float32 [n_frames, layers, dim]`:

- `Wav2Vec2Encoder`: a local transformers wav2vec2 folder (wav2vec2-base-960h in the release). The
  convolutional features (50 Hz) are linearly interpolated to `n_frames` (25 fps) BEFORE the transformer
  encoder, and the outputs of all transformer layers are stacked -> [n_frames, 12, 768].
- `LogMelEncoder`: the embedded default without weights, log-mel energies on the same 25 fps grid
  -> [n_frames, 1, 80].

`streaming_features` is THE function that turns a whole clip's audio into one feature row per video
frame exactly as the Temporal Audio Context Cache (paper eq. 2-3) computes them at inference:

    every chunk, the first included, makes `stride` new frames after the previous one (the authors'
    streaming mode); with `first=33` (the engine's `first_chunk="full"` option) chunk 0 makes [0, 33).
    For each chunk, the 8 s (200-frame) audio window ending at the chunk's last frame is encoded
    (zero-padded before the start of the audio and after its end) and the chunk's new rows are kept.

`stride` is the number of new frames per chunk: 24 for Lite (LTX, 9 motion frames), 28 for Pro (Wan,
5 motion frames); see `vividhead.models.flashhead.GEOMETRY`. The build's `audio.npy` and the inference
cache (`vividhead.inference.audio_cache`) both call `encode_window`, so train and serve see identical rows.
A streamed chunk also re-reads the rows of its motion frames (the previous chunk's last 9 / 5 frames) from
its own window; the build keeps those rows from the window that made them (see docs/stream.md).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np

from vividhead.media import MediaError, decode_audio
from vividhead.weights_verify import verify_weights

SAMPLE_RATE = 16000
FPS = 25
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS      # 640
WINDOW_SECONDS = 8.0
WINDOW_FRAMES = int(WINDOW_SECONDS * FPS)   # 200 video frames in the context window


class AudioEncoder(Protocol):
    """Maps 16 kHz mono audio to one feature row per 25 fps video frame."""

    layers: int
    dim: int
    name: str

    def __call__(self, audio: np.ndarray, n_frames: int) -> np.ndarray: ...


def frames_for_samples(n_samples: int) -> int:
    """Video frames (25 fps) covering `n_samples` of 16 kHz audio; a partial last frame counts."""
    return math.ceil(n_samples / SAMPLES_PER_FRAME)


class AudioTooLong(ValueError):
    """The audio holds more than the caller's cap (the message says the cap)."""


def load_audio(path: Path | BinaryIO, sample_rate: int = SAMPLE_RATE, name: str | None = None,
               max_seconds: float | None = None) -> np.ndarray:
    """Decode any audio (or the audio stream of a video), a path or a binary file object, to float32 mono.

    With `max_seconds`, the container's declared duration is checked first and decoding is incremental: it
    stops as soon as the output passes the cap (raising AudioTooLong), so memory stays bounded by the cap
    whatever the file claims or holds.
    """
    if isinstance(path, (str, Path)):
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        source: Path | bytes = path
        origin = str(path)
    else:
        source, origin = path.read(), name or "uploaded audio"
    try:
        audio = decode_audio(source, sample_rate, origin, max_seconds)
    except MediaError as err:
        if err.reason == "too_long":
            raise AudioTooLong(err.detail) from None
        raise
    if audio is None:
        raise ValueError(f"{origin}: no audio stream")
    if not audio.size:
        raise ValueError(f"{origin}: the audio stream decodes to no samples")
    return audio


# ---------------------------------------------------------------------------------------- encoders
class Wav2Vec2Encoder:
    """wav2vec2 from a local transformers folder; features interpolated to 25 fps before the encoder."""

    name = "wav2vec2"

    def __init__(self, path: Path, device: str = "cpu") -> None:
        import os

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: not a transformers wav2vec2 folder (config.json missing)")
        verify_weights("wav2vec2", path)   # lock record; config.json model_type
        self.model = Wav2Vec2Model.from_pretrained(str(path)).to(device).eval()
        if (path / "preprocessor_config.json").is_file():
            self.processor = Wav2Vec2FeatureExtractor.from_pretrained(str(path))
        else:  # wav2vec2-base-960h normalises each input to zero mean, unit variance
            self.processor = Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=SAMPLE_RATE)
        self.device = device
        self.layers = self.model.config.num_hidden_layers
        self.dim = self.model.config.hidden_size
        self._torch = torch
        # The layer outputs are caught with forward hooks on the shared model: two calls at once (stream
        # sessions on their own threads) would each catch both calls' layers. One call at a time.
        self._lock = threading.Lock()

    def __call__(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        torch = self._torch
        values = self.processor(audio, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_values
        values = values.to(self.device, torch.float32)                        # [1, samples]
        with self._lock:
            outputs = self._layer_outputs(values, n_frames)
        return torch.stack(outputs, dim=2)[0].float().cpu().numpy()          # [n_frames, layers, dim]

    def _layer_outputs(self, values, n_frames: int) -> list:
        """The transformer layers' outputs for one input; the caller holds the lock."""
        torch = self._torch
        outputs: list[torch.Tensor] = []
        hooks = [layer.register_forward_hook(lambda _m, _i, out: outputs.append(out[0] if isinstance(out, tuple) else out))
                 for layer in self.model.encoder.layers]
        try:
            with torch.inference_mode():
                conv = self.model.feature_extractor(values)                   # [1, 512, T50]
                conv = torch.nn.functional.interpolate(conv, size=n_frames, mode="linear", align_corners=True)
                hidden, _ = self.model.feature_projection(conv.transpose(1, 2))  # [1, n_frames, dim]
                self.model.encoder(hidden)
        finally:
            for hook in hooks:
                hook.remove()
        return outputs


@dataclass(frozen=True)
class LogMelEncoder:
    """Embedded default: 80 log-mel bands, one 64 ms window centred on each 40 ms video frame."""

    bands: int = 80
    n_fft: int = 1024
    name: str = "logmel"

    @property
    def layers(self) -> int:
        return 1

    @property
    def dim(self) -> int:
        return self.bands

    def __call__(self, audio: np.ndarray, n_frames: int) -> np.ndarray:
        from python_speech_features import get_filterbanks

        audio = np.asarray(audio, dtype=np.float32)[: n_frames * SAMPLES_PER_FRAME]
        audio = np.pad(audio, (0, n_frames * SAMPLES_PER_FRAME - len(audio)))
        half = self.n_fft // 2
        padded = np.pad(audio, (half, half))
        centres = np.arange(n_frames) * SAMPLES_PER_FRAME + SAMPLES_PER_FRAME // 2
        index = centres[:, None] + np.arange(self.n_fft)[None, :]               # window starts at centre - half
        frames = padded[index] * np.hanning(self.n_fft).astype(np.float32)      # [n_frames, n_fft]
        power = np.abs(np.fft.rfft(frames, axis=1)) ** 2 / self.n_fft           # [n_frames, n_fft/2+1]
        fbank = get_filterbanks(nfilt=self.bands, nfft=self.n_fft, samplerate=SAMPLE_RATE)
        mel = np.log10(np.maximum(power @ fbank.T, 1e-6))
        return ((mel + 4.0) / 4.0).astype(np.float32)[:, None, :]               # [n_frames, 1, bands]


def load_audio_encoder(path: Path | None, device: str = "cpu") -> AudioEncoder:
    """wav2vec2 from `path` when given, else the log-mel default."""
    if path is None:
        return LogMelEncoder()
    return Wav2Vec2Encoder(Path(path), device=device)


# -------------------------------------------------------------------------------- streaming geometry
def chunk_spans(n_frames: int, stride: int, first: int | None = None) -> list[tuple[int, int]]:
    """[start, end) of the NEW frames of each chunk covering `n_frames` (the last may run past the end).

    Every chunk makes `stride` frames; `first` (default: `stride`) sets the first chunk's alone.
    """
    first = stride if first is None else first
    if stride < 1 or first < 1:
        raise ValueError(f"chunk geometry: stride ({stride}) and first ({first}) must be positive")
    spans = [(0, first)]
    while spans[-1][1] < n_frames:
        start = spans[-1][1]
        spans.append((start, start + stride))
    return spans


def window_for(audio: np.ndarray, end_frame: int, window_frames: int = WINDOW_FRAMES) -> np.ndarray:
    """Audio samples of the `window_frames` window ending at video frame `end_frame`, zero-padded."""
    end = end_frame * SAMPLES_PER_FRAME
    start = end - window_frames * SAMPLES_PER_FRAME
    piece = np.asarray(audio, dtype=np.float32)[max(start, 0): end]
    return np.pad(piece, (max(-start, 0), end - max(start, 0) - len(piece)))


def encode_window(encoder: AudioEncoder, window: np.ndarray) -> np.ndarray:
    """Encode one context window: float32 [window frames, layers, dim]. Shared by build and stream."""
    n_frames = len(window) // SAMPLES_PER_FRAME
    if n_frames * SAMPLES_PER_FRAME != len(window):
        raise ValueError(f"window of {len(window)} samples is not a whole number of {SAMPLES_PER_FRAME}-sample frames")
    return encoder(window, n_frames)


def streaming_features(
    encoder: AudioEncoder,
    audio: np.ndarray,
    n_frames: int | None = None,
    *,
    stride: int,
    first: int | None = None,
    window_frames: int = WINDOW_FRAMES,
) -> np.ndarray:
    """One feature row per video frame, as the streaming cache computes them: [n_frames, layers, dim].

    `stride` is the new frames per chunk (24 Lite, 28 Pro); `first` the first chunk's when it differs
    (33 for the engine's full-first-chunk option). `n_frames` defaults to the frames covering the audio.
    The build stores the result as float16 `audio.npy`.
    """
    n_frames = frames_for_samples(len(audio)) if n_frames is None else n_frames
    rows: list[np.ndarray] = []
    for start, end in chunk_spans(n_frames, stride, first):
        feats = encode_window(encoder, window_for(audio, end, window_frames))
        rows.append(feats[window_frames - (end - start):])
    return np.concatenate(rows)[:n_frames]
