"""silero-vad voice activity (the package ships its model, so it always runs offline)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_RATE = 16000


@dataclass(frozen=True)
class SpeechSegments:
    """Speech found in one audio signal: (start, end) seconds, and the share of time covered."""

    segments: tuple[tuple[float, float], ...]
    duration: float

    @property
    def ratio(self) -> float:
        speech = sum(end - start for start, end in self.segments)
        return float(min(1.0, speech / self.duration)) if self.duration > 0 else 0.0


class SileroVad:
    """One silero-vad model (JIT, CPU, a single thread is plenty for 16 kHz audio)."""

    def __init__(self, threshold: float = 0.5, min_speech_ms: int = 250, min_silence_ms: int = 100) -> None:
        from silero_vad import load_silero_vad

        self.model = load_silero_vad()
        self.threshold = threshold
        self.min_speech_ms = min_speech_ms
        self.min_silence_ms = min_silence_ms

    def __call__(self, audio_16k: np.ndarray) -> SpeechSegments:
        """Speech segments of float32 mono 16 kHz audio."""
        import torch
        from silero_vad import get_speech_timestamps

        audio = np.ascontiguousarray(audio_16k, dtype=np.float32)
        found = get_speech_timestamps(
            torch.from_numpy(audio),
            self.model,
            threshold=self.threshold,
            sampling_rate=SAMPLE_RATE,
            min_speech_duration_ms=self.min_speech_ms,
            min_silence_duration_ms=self.min_silence_ms,
        )
        self.model.reset_states()
        segments = tuple((s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in found)
        return SpeechSegments(segments, len(audio) / SAMPLE_RATE)
