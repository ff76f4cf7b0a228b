"""The weight-free lip-sync check of stage 10 (used when no SyncNet weights are configured).

It measures how the mouth moves against the speech and says how sure it is. Every tunable part below
was chosen by leave-one-speaker-out cross-validation on the dev footage (benchmarks/sync_cv.py;
docs/filters.md gives the figures and the reasons):

- mouth: per 25 fps frame, the measures of `models/face_mesh.mouth_track` (`MOUTH_COLUMNS`), gaps where
  the mesh lost the face filled linearly. The features (`proxy_features`) are `gap` (inner plus outer
  lip gap, standardised), `area` (the inner-lip area over the face height squared) and `dark` (how dark
  the middle of the mouth region is: an open mouth shows its inside);
- speech: the log RMS of the speech band (`proxy_band_hz`) per video frame, with a floor at the clip's
  20th percentile so that digital silence (a delayed or padded track) is not a huge step;
- views: one per band of `proxy_bands` (a modulation band in Hz, or None for unfiltered). In a view,
  every feature and the speech are filtered to the band, and the feature's lag correlations with the
  speech are averaged over the features (so are the chance correlations, shift by shift);
- `lag`: the shift in frames, within +-`proxy_max_search_offset`, at which a view's averaged correlation
  of mouth[t] and speech[t + lag] peaks. Lips lead the sound, so in-sync speakers peak at a small
  positive lag;
- `z`, the confidence: how far that peak stands above chance, in standard deviations of the
  correlations at circular shifts far from any plausible sync (more than search + 10 frames). With
  several views it is corrected for their number (Sidak: the z whose tail equals the chance that any
  view reaches the raw z), so searching more views does not verify more chance peaks. The view with the
  strongest peak in the lead window decides (else the strongest peak anywhere), and is recorded.

`decide(lag, z, config)` turns the two numbers into `in_sync`, `out_of_sync` or `unsure`. Only a
strong peak (`proxy_reject_z`) beyond `proxy_reject_tolerance` of the natural lead rejects; a weak peak
is `unsure`, which keeps the clip but marks it not verified. None of these values is SyncNet's LSE-C or LSE-D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from vividhead.models.face_mesh import MOUTH_COLUMNS
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
    corr: float        # the (feature-averaged) correlation at that lag, in the deciding view
    z: float           # the peak above chance, in SDs of far-shift correlations, corrected for the views searched
    face_ratio: float  # share of frames where the face mesh found a face
    view: str = ""     # the deciding view: its features and band, e.g. "area+dark 2-10 Hz"


@dataclass(frozen=True)
class Decision:
    """The verdict on a measure, the audio shift that corrects it (frames, + = delay) and why."""

    verdict: Verdict
    audio_shift: int
    reason: str


def mouth_features(mouth: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray] | None:
    """The named features per frame from mouth measures [n, len(MOUTH_COLUMNS)] (NaN = no face), gaps filled.

    None when the mesh found a face in fewer than `MIN_FACE_RATIO` of the frames.
    """
    mouth = np.asarray(mouth, np.float64).reshape(len(mouth), len(MOUTH_COLUMNS))
    valid = np.isfinite(mouth).all(axis=1)
    if len(mouth) == 0 or valid.mean() < MIN_FACE_RATIO:
        return None
    idx = np.arange(len(mouth))
    column = {name: np.interp(idx, idx[valid], mouth[valid, k]) for k, name in enumerate(MOUTH_COLUMNS)}
    out = {}
    for name in names:
        if name == "gap":
            out[name] = _standardise(column["inner_gap"]) + _standardise(column["outer_gap"])
        elif name in ("area", "dark"):
            out[name] = column[name]
        else:
            raise ValueError(f"sync.proxy_features: unknown feature {name!r}; expected gap, area or dark")
    return out


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


def modulation(x: np.ndarray, band_hz: tuple[float, float] | None) -> np.ndarray:
    """x (one value per 25 fps frame) band-passed to `band_hz`, e.g. the 2-10 Hz syllable rate; None: unfiltered."""
    if band_hz is None or len(x) < 30:
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


def band_label(band_hz: tuple[float, float] | None) -> str:
    return "unfiltered" if band_hz is None else f"{band_hz[0]:g}-{band_hz[1]:g} Hz"


def sidak(z: float, views: int) -> float:
    """The z whose one-sided normal tail equals the chance that any of `views` views reaches z by chance."""
    if views <= 1:
        return z
    from scipy.stats import norm  # Ray worker boundary, as in _band_pass

    return float(norm.isf(-np.expm1(views * np.log1p(-norm.sf(z)))))


def measure(mouth: np.ndarray, audio_16k: np.ndarray, config: SyncConfig) -> LipSyncMeasure | None:
    """The lag and confidence of mouth motion against speech; None when there are too few faces or frames."""
    features = mouth_features(mouth, tuple(config.proxy_features))
    if features is None:
        return None
    speech = speech_envelope(audio_16k, config.proxy_band_hz)
    n = min(len(speech), len(mouth))
    search = config.proxy_max_search_offset
    if n - 2 * (search + NULL_GUARD) < MIN_NULL_LAGS:
        return None
    lead, tolerance = config.proxy_lead_frames, config.proxy_lead_tolerance
    views = []                                         # (in the lead window, z, lag, corr, label) per view
    for band in config.proxy_bands:
        heard = modulation(speech[:n], band)
        seen = [modulation(x[:n], band) for x in features.values()]
        corr = np.mean([lag_correlations(x, heard, search) for x in seen], axis=0)
        chance = np.mean([chance_correlations(x, heard, search + NULL_GUARD) for x in seen], axis=0)
        best = int(np.argmax(corr))
        spread = float(chance.std())
        z = (float(corr[best]) - float(chance.mean())) / spread if spread > 1e-8 else 0.0
        views.append((abs(best - search - lead) <= tolerance, sidak(z, len(config.proxy_bands)), best - search,
                      float(corr[best]), f"{'+'.join(features)} {band_label(band)}"))
    inside, z, lag, corr, label = max(views, key=lambda v: (v[0], v[1]))
    valid = np.isfinite(np.asarray(mouth, np.float64).reshape(len(mouth), -1)).all(axis=1)
    return LipSyncMeasure(lag=lag, corr=corr, z=z, face_ratio=float(valid.mean()), view=label)


def decide(lag: int | None, z: float | None, config: SyncConfig) -> Decision:
    """The verdict on a measured lag and confidence (None: nothing was measured).

    - `in_sync`: the lag lies within `proxy_lead_tolerance` frames of the natural lead
      `proxy_lead_frames` and the peak is at least `proxy_min_z` above chance;
    - corrected (`in_sync` with an audio shift): with `correct_offset`, a lag more than
      `proxy_reject_tolerance` but at most `proxy_max_correct_offset` frames from the lead, measured with a
      peak of `proxy_reject_z`;
    - `out_of_sync`: a peak of at least `proxy_reject_z` more than `proxy_reject_tolerance` frames from
      the lead (strong evidence only, at a lag no in-sync dev speaker showed);
    - `unsure` otherwise: a weak peak, or an offset whose evidence is not strong enough to reject
      (including peaks between the lead window and the reject window).
    """
    if lag is None or z is None:
        return Decision("unsure", 0, "no_measure")
    offset = lag - config.proxy_lead_frames
    if abs(offset) <= config.proxy_lead_tolerance:
        return Decision("in_sync", 0, "") if z >= config.proxy_min_z else Decision("unsure", 0, "weak_peak")
    if z < config.proxy_reject_z:
        return Decision("unsure", 0, "weak_offset" if z >= config.proxy_min_z else "weak_peak")
    if abs(offset) <= config.proxy_reject_tolerance:   # a natural lead or a small shift: neither rejected nor moved
        return Decision("unsure", 0, "weak_offset")
    if config.correct_offset and abs(offset) <= config.proxy_max_correct_offset:
        return Decision("in_sync", -offset, "corrected")
    return Decision("out_of_sync", 0, "offset")
