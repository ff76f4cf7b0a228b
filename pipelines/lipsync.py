"""The weight-free lip-sync check of stage 10 (used when no SyncNet weights are configured).

It measures how the lips move against the speech and says how sure it is:

- lips: the inner and outer lip gaps from the face mesh (each divided by the face height), standardised
  and summed, one value per 25 fps frame, gaps where the mesh lost the face filled linearly;
- speech: the log RMS of the speech band (`proxy_band_hz`) per video frame, with a floor at the
  clip's 20th percentile so that digital silence (a delayed or padded track) is not a huge step;
- both are band-passed to the syllable rate (`proxy_modulation_hz`, 1-8 Hz): slow head and loudness
  drifts would otherwise dominate the correlation and blur its peak;
- `lag`: the shift in frames, within +-`proxy_max_search_offset`, at which the Pearson correlation of
  lips[t] and speech[t + lag] peaks. Lips lead the sound, so in-sync speakers peak at a small positive
  lag (measured on the dev footage: -2..+6 frames, median +2; docs/filters.md);
- `z`, the confidence: how far that peak stands above chance, in standard deviations of the
  correlations at circular shifts far from any plausible sync (more than search + 10 frames).

`verdict(lag, z, config)` turns the two numbers into `in_sync`, `out_of_sync` or `unsure`. Only a
strong peak (`proxy_reject_z`) outside the natural lead window rejects; a weak peak is `unsure`,
which keeps the clip but marks it not verified. None of these values is SyncNet's LSE-C or LSE-D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vividhead.pipelines.filter_config import SyncConfig

FPS = 25
SAMPLE_RATE = 16000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS
NULL_GUARD = 10            # chance correlations are taken at circular shifts beyond search + this
MIN_FACE_RATIO = 0.5       # below this share of frames with a mesh face the lips are not measured
MIN_NULL_LAGS = 20         # fewer chance lags than this: the clip is too short to judge

Verdict = Literal["in_sync", "out_of_sync", "unsure"]


@dataclass(frozen=True)
class LipSyncMeasure:
    """What the check measured on one clip."""

    lag: int           # frames the speech trails the lips at the best correlation (+ = lips lead)
    corr: float        # Pearson correlation at that lag (band-passed signals)
    z: float           # the peak above chance, in standard deviations of far-shift correlations
    face_ratio: float  # share of frames where the face mesh found a face


@dataclass(frozen=True)
class Decision:
    """The verdict on a measure, the audio shift that corrects it (frames, + = delay) and why."""

    verdict: Verdict
    audio_shift: int
    reason: str


def lip_signal(gaps: np.ndarray) -> np.ndarray | None:
    """Lip motion per frame from [n, 2] inner/outer lip gaps (NaN = no face): standardised sum, gaps filled.

    None when the mesh found a face in fewer than `MIN_FACE_RATIO` of the frames.
    """
    gaps = np.asarray(gaps, np.float64).reshape(len(gaps), -1)
    valid = np.isfinite(gaps).all(axis=1)
    if len(gaps) == 0 or valid.mean() < MIN_FACE_RATIO:
        return None
    idx = np.arange(len(gaps))
    filled = np.stack([np.interp(idx, idx[valid], gaps[valid, k]) for k in range(gaps.shape[1])], axis=1)
    return sum(_standardise(filled[:, k]) for k in range(filled.shape[1]))


def speech_envelope(audio_16k: np.ndarray, band_hz: tuple[float, float]) -> np.ndarray:
    """Log RMS of the speech band per 25 fps frame, floored at the clip's 20th percentile, [n_frames]."""
    audio = np.asarray(audio_16k, np.float64)
    if len(audio) > 30:
        audio = _band_pass(audio, 4, band_hz, SAMPLE_RATE)
    n = len(audio) // SAMPLES_PER_FRAME
    rms = np.sqrt((audio[: n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME) ** 2).mean(axis=1))
    audible = rms[rms > 0]
    floor = max(float(np.percentile(audible, 20)) if audible.size else 0.0, 1e-5)
    return np.log(np.maximum(rms, floor))


def modulation(x: np.ndarray, band_hz: tuple[float, float]) -> np.ndarray:
    """x (one value per 25 fps frame) band-passed to `band_hz`, e.g. the 1-8 Hz syllable rate."""
    if len(x) < 30:
        return x - x.mean()
    return _band_pass(x, 2, band_hz, FPS)


def _band_pass(x: np.ndarray, order: int, band_hz: tuple[float, float], fs: float) -> np.ndarray:
    """Zero-phase Butterworth band-pass of `order` (forward and backward, as second-order sections)."""
    # Ray worker boundary: scipy.signal takes seconds to import, and every Ray worker imports this module
    # with the stage table; only the sync actor filters, so only it pays for the import.
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(order, band_hz, btype="band", fs=fs, output="sos"), x)


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 1e-8 else np.zeros_like(x)


def lag_correlations(lips: np.ndarray, speech: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of lips[t] with speech[t + lag] on their overlap, for lag = -max_lag..max_lag."""
    n = min(len(lips), len(speech))
    a_all, b_all = lips[:n], speech[:n]
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        a, b = (a_all[: n - lag], b_all[lag:]) if lag >= 0 else (a_all[-lag:], b_all[: n + lag])
        if len(a) > 2:
            out[i] = float((_standardise(a) * _standardise(b)).mean())
    return out


def chance_correlations(lips: np.ndarray, speech: np.ndarray, guard: int) -> np.ndarray:
    """Correlations at circular shifts of the speech by guard..n-guard frames (far from any sync)."""
    n = min(len(lips), len(speech))
    a, b = _standardise(lips[:n]), _standardise(speech[:n])
    circular = np.real(np.fft.ifft(np.conj(np.fft.fft(a)) * np.fft.fft(b))) / n   # [k]: mean(a[t] * b[t + k])
    return circular[guard: n - guard]


def measure(gaps: np.ndarray, audio_16k: np.ndarray, config: SyncConfig) -> LipSyncMeasure | None:
    """The lag and confidence of lip motion against speech; None when there are too few faces or frames."""
    lips = lip_signal(gaps)
    if lips is None:
        return None
    speech = speech_envelope(audio_16k, config.proxy_band_hz)
    n = min(len(lips), len(speech))
    search = config.proxy_max_search_offset
    if n - 2 * (search + NULL_GUARD) < MIN_NULL_LAGS:
        return None
    band = config.proxy_modulation_hz
    lips, speech = modulation(lips[:n], band), modulation(speech[:n], band)
    corr = lag_correlations(lips, speech, search)
    chance = chance_correlations(lips, speech, search + NULL_GUARD)
    best = int(np.argmax(corr))
    spread = float(chance.std())
    z = (float(corr[best]) - float(chance.mean())) / spread if spread > 1e-8 else 0.0
    valid = np.isfinite(np.asarray(gaps, np.float64).reshape(len(gaps), -1)).all(axis=1)
    return LipSyncMeasure(lag=best - search, corr=float(corr[best]), z=z, face_ratio=float(valid.mean()))


def decide(lag: int | None, z: float | None, config: SyncConfig) -> Decision:
    """The verdict on a measured lag and confidence (None: nothing was measured).

    - `in_sync`: the lag lies within `proxy_lead_tolerance` frames of the natural lead
      `proxy_lead_frames` and the peak is at least `proxy_min_z` above chance;
    - corrected (`in_sync` with an audio shift): with `correct_offset`, a lag outside that window but
      within `proxy_max_correct_offset` frames of the lead, measured with a peak of `proxy_reject_z`;
    - `out_of_sync`: a peak of at least `proxy_reject_z` outside the window (strong evidence only);
    - `unsure` otherwise: a weak peak, or an offset whose evidence is not strong enough to reject.
    """
    if lag is None or z is None:
        return Decision("unsure", 0, "no_measure")
    offset = lag - config.proxy_lead_frames
    if abs(offset) <= config.proxy_lead_tolerance:
        return Decision("in_sync", 0, "") if z >= config.proxy_min_z else Decision("unsure", 0, "weak_peak")
    if z < config.proxy_reject_z:
        return Decision("unsure", 0, "weak_offset" if z >= config.proxy_min_z else "weak_peak")
    if config.correct_offset and abs(offset) <= config.proxy_max_correct_offset:
        return Decision("in_sync", -offset, "corrected")
    return Decision("out_of_sync", 0, "offset")
