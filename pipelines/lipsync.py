"""The weight-free lip-sync check of stage 10 (used when no SyncNet weights are configured).

It measures how the mouth moves against the speech and says how sure it is. Every tunable part below
was chosen by leave-one-speaker-out cross-validation on the dev footage (benchmarks/sync_cv.py;
docs/filters.md gives the figures and the reasons). Two signals can be measured (`proxy_signal`):

- canonical (the default): the canonical correlation of mouth appearance and the speech spectrum, the
  "FaceSync" idea. Mouth: the 32x16 grey patches that `models/face_mesh.mouth_track` reads where the
  mesh puts the mouth, each frame's mean brightness removed, as their change from the previous frame
  (`proxy_look: motion`), reduced to their first `proxy_mouth_dims` principal components
  (`mouth_appearance`, `principal`). Speech: the log energies of `proxy_mel_bands` mel bands per 40 ms
  frame (`speech_spectrum`), reduced to `proxy_speech_dims` principal components. Both are filtered to
  the view's band. At every shift, the first canonical correlation is the largest correlation any
  weighting of the mouth components reaches with any weighting of the speech components
  (`cross_covariances`, `canonical_shifts`): the clip itself finds which pixels move with which bands;
- lips: the mesh measures `MOUTH_COLUMNS` (`proxy_features`: `gap`, the inner plus outer lip gap;
  `area`, the inner-lip area; `dark`, how dark the middle of the mouth patch is) against the log RMS
  of the speech band (`proxy_band_hz`), the features' lag correlations averaged (`lip_curves`).

In both, frames where the mesh lost the face are filled linearly (a clip with a face in fewer than
`MIN_FACE_RATIO` of its frames is not measured), and the speech is floored at its 20th percentile so
that digital silence (a delayed or padded track) is not a huge step.

- views: one per band of `proxy_bands` (a modulation band in Hz, or None for unfiltered);
- `lag`: the shift in frames, within +-`proxy_max_search_offset`, at which a view's curve of
  mouth[t] against speech[t + lag] peaks. The mouth leads the sound, so in-sync speakers peak at a small
  positive lag (the motion of the patches peaks about a frame earlier than the lip area);
- `z`, the confidence: how far that peak stands above chance, in standard deviations of the same
  statistic at circular shifts far from any plausible sync (more than search + 10 frames). With
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

    lag: int           # frames the speech trails the mouth at the peak (+ = mouth leads)
    corr: float        # the deciding view's value at that lag: the first canonical correlation (canonical) or
                       # the feature-averaged correlation (lips)
    z: float           # the peak above chance, in SDs of far-shift values, corrected for the views searched
    face_ratio: float  # share of frames where the face mesh found a face
    view: str = ""     # the deciding view, e.g. "canonical motion 4x2 1-8 Hz" or "area+dark 2-10 Hz"


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


def modulation_columns(x: np.ndarray, band_hz: tuple[float, float] | None) -> np.ndarray:
    """Every column of x [n, d] (one row per 25 fps frame) as `modulation` filters one signal."""
    if band_hz is None or len(x) < 30:
        return x - x.mean(axis=0)
    return _band_pass(x, 2, band_hz, FPS, axis=0)


def _band_pass(x: np.ndarray, order: int, band_hz: tuple[float, float], fs: float, axis: int = -1) -> np.ndarray:
    """Zero-phase Butterworth band-pass of `order` (forward and backward, as second-order sections)."""
    # Ray worker boundary: scipy.signal takes seconds to import, and every Ray worker imports this module
    # with the stage table; only the sync actor filters, so only it pays for the import.
    from scipy.signal import butter, sosfiltfilt

    return sosfiltfilt(butter(order, band_hz, btype="band", fs=fs, output="sos"), x, axis=axis)


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


# ------------------------------------------------------------------- canonical correlation (appearance)
def mouth_appearance(patches: np.ndarray, valid: np.ndarray, motion: bool) -> np.ndarray:
    """Mouth patches [n, PATCH_H, PATCH_W] as rows of pixels [n, PATCH_H * PATCH_W], each frame's mean
    brightness removed (lighting changes are not speech), frames without a face filled linearly.
    With `motion`, the change from the previous frame instead (the first frame's change is zero)."""
    pixels = np.asarray(patches, np.float64).reshape(len(patches), -1)
    pixels = pixels - pixels.mean(axis=1, keepdims=True)
    valid = np.asarray(valid, bool)
    if not valid.all():
        idx = np.arange(len(pixels))
        pixels = np.stack([np.interp(idx, idx[valid], column) for column in pixels[valid].T], axis=1)
    return np.diff(pixels, axis=0, prepend=pixels[:1]) if motion else pixels


def mel_filters(n_bands: int, band_hz: tuple[float, float], frame: int = SAMPLES_PER_FRAME) -> np.ndarray:
    """Triangular filters [n_bands, frame // 2 + 1] spaced evenly on the mel scale over `band_hz`."""
    def mel(hz: np.ndarray) -> np.ndarray:
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    steps = np.linspace(mel(np.float64(band_hz[0])), mel(np.float64(band_hz[1])), n_bands + 2)
    edges = 700.0 * (10.0 ** (steps / 2595.0) - 1.0)
    freqs = np.fft.rfftfreq(frame, 1.0 / SAMPLE_RATE)
    rising = (freqs[None, :] - edges[:-2, None]) / (edges[1:-1, None] - edges[:-2, None])
    falling = (edges[2:, None] - freqs[None, :]) / (edges[2:, None] - edges[1:-1, None])
    return np.clip(np.minimum(rising, falling), 0.0, None)


def speech_spectrum(audio_16k: np.ndarray, n_frames: int, n_bands: int = 16,
                    band_hz: tuple[float, float] = (100.0, 7000.0)) -> np.ndarray:
    """Log mel-band energies of the audio per 25 fps frame [n_frames, n_bands] (Hann-windowed 40 ms frames),
    each band floored at its 20th percentile, as `speech_envelope` floors the speech band."""
    audio = np.asarray(audio_16k, np.float64)[: n_frames * SAMPLES_PER_FRAME]
    audio = np.pad(audio, (0, n_frames * SAMPLES_PER_FRAME - len(audio)))
    frames = audio.reshape(n_frames, SAMPLES_PER_FRAME) * np.hanning(SAMPLES_PER_FRAME)
    energy = (np.abs(np.fft.rfft(frames, axis=1)) ** 2) @ mel_filters(n_bands, band_hz).T
    out = np.empty_like(energy)
    for j, band in enumerate(energy.T):
        audible = band[band > 0]
        floor = max(float(np.percentile(audible, 20)) if audible.size else 0.0, 1e-12)
        out[:, j] = np.log(np.maximum(band, floor))
    return out


def principal(x: np.ndarray, dims: int) -> np.ndarray:
    """The first `dims` principal components of rows x [n, d], each scaled to unit variance [n, <= dims]
    (components without variance are dropped). Their cross-covariances are then canonical-ready."""
    centred = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    keep = s[:dims] > 1e-8 * max(float(s[0]) if len(s) else 0.0, 1e-30)
    return u[:, :dims][:, keep] * np.sqrt(len(x))


def cross_covariances(seen: np.ndarray, heard: np.ndarray) -> np.ndarray:
    """[k, i, j]: mean over t of seen_i[t] * heard_j[t + k] at every circular shift k = 0..n-1 (k > n/2
    are negative lags), for components seen [n, p] and heard [n, q]; all shifts at once by FFT."""
    n = min(len(seen), len(heard))
    a, b = np.fft.fft(seen[:n], axis=0), np.fft.fft(heard[:n], axis=0)
    return np.fft.ifft(np.conj(a)[:, :, None] * b[:, None, :], axis=0).real / n


def canonical_shifts(cross: np.ndarray) -> np.ndarray:
    """The first canonical correlation at every shift [n], from `cross_covariances` of `principal`
    components: they have unit variance and are uncorrelated (a circular shift keeps that), so the
    canonical correlations at a shift are the singular values of the cross-covariance there."""
    if cross.shape[1] == 0 or cross.shape[2] == 0:
        return np.zeros(len(cross))
    return np.linalg.svd(cross, compute_uv=False)[:, 0]


def band_label(band_hz: tuple[float, float] | None) -> str:
    return "unfiltered" if band_hz is None else f"{band_hz[0]:g}-{band_hz[1]:g} Hz"


def sidak(z: float, views: int) -> float:
    """The z whose one-sided normal tail equals the chance that any of `views` views reaches z by chance."""
    if views <= 1:
        return z
    from scipy.stats import norm  # Ray worker boundary, as in _band_pass

    return float(norm.isf(-np.expm1(views * np.log1p(-norm.sf(z)))))


def lip_curves(features: dict[str, np.ndarray], speech: np.ndarray, band: tuple[float, float] | None,
               search: int) -> tuple[np.ndarray, np.ndarray]:
    """The lips view: the features' lag correlations with the speech envelope (lags +-search) and their
    chance correlations (far circular shifts), both averaged over the features."""
    heard = modulation(speech, band)
    seen = [modulation(x[: len(speech)], band) for x in features.values()]
    return (np.mean([lag_correlations(x, heard, search) for x in seen], axis=0),
            np.mean([chance_correlations(x, heard, search + NULL_GUARD) for x in seen], axis=0))


def canonical_curves(appearance: np.ndarray, spectrum: np.ndarray, band: tuple[float, float] | None,
                     config: SyncConfig) -> tuple[np.ndarray, np.ndarray]:
    """The canonical view: the first canonical correlation of the mouth appearance's principal components
    (`mouth_appearance`) with the log mel bands' (`speech_spectrum`), both filtered to `band`, at lags
    +-search and at far circular shifts."""
    seen = principal(modulation_columns(appearance, band), config.proxy_mouth_dims)
    heard = principal(modulation_columns(spectrum, band), config.proxy_speech_dims)
    return lags_and_chance(canonical_shifts(cross_covariances(seen, heard)), config.proxy_max_search_offset)


def lags_and_chance(shifts: np.ndarray, search: int) -> tuple[np.ndarray, np.ndarray]:
    """From a statistic at every circular shift [n]: its values at lags -search..search, and at the shifts
    beyond search + NULL_GUARD (chance)."""
    n = len(shifts)
    guard = search + NULL_GUARD
    return shifts[np.arange(-search, search + 1) % n], shifts[guard: n - guard]


def peak(corr: np.ndarray, chance: np.ndarray, search: int) -> tuple[int, float, float]:
    """(lag, value, z) of a view's highest value over lags -search..search, z above its chance values in their SDs."""
    best = int(np.argmax(corr))
    spread = float(chance.std())
    z = (float(corr[best]) - float(chance.mean())) / spread if spread > 1e-8 else 0.0
    return best - search, float(corr[best]), z


def view_label(config: SyncConfig, band: tuple[float, float] | None) -> str:
    """e.g. "canonical motion 4x2 1-8 Hz" or "area+dark 2-10 Hz"."""
    if config.proxy_signal == "canonical":
        dims = f"{config.proxy_mouth_dims}x{config.proxy_speech_dims}"
        return f"canonical {config.proxy_look} {dims} {band_label(band)}"
    return f"{'+'.join(config.proxy_features)} {band_label(band)}"


def measure(mouth: np.ndarray, audio_16k: np.ndarray, config: SyncConfig,
            patches: np.ndarray | None = None) -> LipSyncMeasure | None:
    """The lag and confidence of mouth motion against speech; None when there are too few faces or frames.

    mouth: the mesh measures [n, len(MOUTH_COLUMNS)] (NaN = no face); patches: the grey mouth patches
    [n, PATCH_H, PATCH_W] of `face_mesh.mouth_track`, which the canonical signal reads.
    """
    features = mouth_features(mouth, tuple(config.proxy_features))
    if features is None:
        return None
    if config.proxy_signal == "canonical" and (patches is None or len(patches) < len(mouth)):
        raise ValueError("sync.proxy_signal 'canonical' reads the mouth patches: pass face_mesh.mouth_track's patches")
    n = min(len(audio_16k) // SAMPLES_PER_FRAME, len(mouth))
    search = config.proxy_max_search_offset
    if n - 2 * (search + NULL_GUARD) < MIN_NULL_LAGS:
        return None
    valid = np.isfinite(np.asarray(mouth, np.float64).reshape(len(mouth), -1)).all(axis=1)
    if config.proxy_signal == "lips":                  # what every view filters, computed once per clip
        speech = speech_envelope(audio_16k, config.proxy_band_hz)[:n]
    else:
        appearance = mouth_appearance(np.asarray(patches)[:n], valid[:n], config.proxy_look == "motion")
        spectrum = speech_spectrum(audio_16k, n, config.proxy_mel_bands, config.proxy_mel_hz)
    lead, tolerance = config.proxy_lead_frames, config.proxy_lead_tolerance
    views = []                                         # (in the lead window, z, lag, value, label) per view
    for band in config.proxy_bands:
        if config.proxy_signal == "lips":
            corr, chance = lip_curves(features, speech, band, search)
        else:
            corr, chance = canonical_curves(appearance, spectrum, band, config)
        lag, value, z = peak(corr, chance, search)
        views.append((abs(lag - lead) <= tolerance, sidak(z, len(config.proxy_bands)), lag, value,
                      view_label(config, band)))
    inside, z, lag, value, label = max(views, key=lambda v: (v[0], v[1]))
    return LipSyncMeasure(lag=lag, corr=value, z=z, face_ratio=float(valid.mean()), view=label)


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
