"""The Temporal Audio Context Cache (paper eq. 2-3): an 8 s ring buffer of 16 kHz audio, zero-filled.

Each chunk pushes the audio of its new video frames (24 Lite / 28 Pro in the authors' streaming mode, the
first chunk included), the whole window is encoded with `vividhead.models.audio_features.encode_window`
(the same call the build uses for `audio.npy`), and the features of the chunk's last 33 frames are
returned: for the first chunk these start with 9 / 5 frames of the zero audio ahead of the stream. The
engine asks for 2 more rows on the left, so the -2..+2 windows of the chunk's first frames see the real
preceding features. `PcmQueue` turns audio that arrives in arbitrary pieces into exactly the chunk-sized
pieces the cache needs."""

from __future__ import annotations

import threading

import numpy as np

from vividhead.models.audio_features import SAMPLES_PER_FRAME, AudioEncoder, encode_window


class AudioContextCache:
    """Ring buffer of the last `window_frames` frames of audio; encodes the window per chunk."""

    def __init__(self, encoder: AudioEncoder, window_frames: int = 200, chunk_frames: int = 33) -> None:
        if chunk_frames > window_frames:
            raise ValueError(f"chunk of {chunk_frames} frames does not fit the {window_frames}-frame window")
        self.encoder, self.chunk_frames = encoder, chunk_frames
        self.window = np.zeros(window_frames * SAMPLES_PER_FRAME, np.float32)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Append one chunk's new audio (a whole number of frames); return [chunk_frames, layers, dim]."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        if len(samples) % SAMPLES_PER_FRAME:
            raise ValueError(f"chunk audio of {len(samples)} samples is not a whole number of {SAMPLES_PER_FRAME}-sample frames")
        keep = len(self.window) - len(samples)
        self.window = np.concatenate([self.window[len(samples):] if keep > 0 else self.window[:0], samples[-len(self.window):]])
        return encode_window(self.encoder, self.window)[-self.chunk_frames:]


class PcmQueue:
    """Accumulates incoming PCM and releases chunk-sized pieces: `first` frames, then `stride` frames."""

    def __init__(self, first: int, stride: int) -> None:
        self.first, self.stride = first, stride
        self.lock = threading.Lock()   # a server feeds on its event loop while a worker thread takes
        self.pending: list[np.ndarray] = []
        self.size = 0
        self.released = 0          # chunks released so far
        self.total = 0             # samples received in all

    def needed(self) -> int:
        return (self.first if self.released == 0 else self.stride) * SAMPLES_PER_FRAME

    def put(self, samples: np.ndarray) -> None:
        samples = np.asarray(samples, np.float32).reshape(-1)
        with self.lock:
            self.pending.append(samples)
            self.size += len(samples)
            self.total += len(samples)

    def seconds(self) -> float:
        """Audio waiting to be generated, in seconds."""
        return self.size / (SAMPLES_PER_FRAME * 25)

    def take(self, flush: bool = False) -> np.ndarray | None:
        """The next chunk's audio, or None when not enough has arrived (flush pads the rest with zeros)."""
        with self.lock:
            need = self.needed()
            if self.size < need and not (flush and self.size > 0):
                return None
            data = np.concatenate(self.pending) if self.pending else np.zeros(0, np.float32)
            piece, rest = data[:need], data[need:]
            self.pending, self.size = ([rest] if len(rest) else []), len(rest)
            self.released += 1
        return np.pad(piece, (0, need - len(piece)))
