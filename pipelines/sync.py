"""Stage 10, sync: audio-visual synchronisation of a clip.

With weights: SyncNet (`syncnet_v2.model`) scored as the reference tool does, reusing the clip's
face track; records `sync.lse_d`, `sync.lse_c`, `sync.offset`, and rejects below
`min_confidence` or above `max_abs_offset`. A small offset can be corrected by shifting the audio
(the shifted wav goes to `StageResult.outputs["wav"]`, recorded as `sync.audio_shift`).

Without weights (embedded default): the mouth opening from the face mesh is correlated with the
speech-band audio envelope over offsets of +-15 frames. It is recorded as `sync.proxy_corr`,
`sync.proxy_offset` and `sync.proxy_peak_ratio`, never as LSE.

The threshold rules of both are the pure function `decide`, which `inspect --what-if` reuses on
stored metrics.
"""

from __future__ import annotations

import io
import time
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Literal

import numpy as np

from vividhead.pipelines.clip_media import SAMPLE_RATE, clip_video, iter_frames, read_audio
from vividhead.pipelines.filter_config import SyncConfig
from vividhead.pipelines.records import Clip, ClipStage, StageResult
from vividhead.weights import Weights

SAMPLES_PER_FRAME = SAMPLE_RATE // 25

# Config field -> the metric (unprefixed) it is compared with.
THRESHOLD_METRICS: Mapping[str, str] = MappingProxyType({
    "min_confidence": "lse_c", "max_abs_offset": "offset",
    "proxy_min_corr": "proxy_corr", "proxy_max_abs_offset": "proxy_offset",
})


def decide(metrics: Mapping[str, Any], config: SyncConfig) -> tuple[str, str] | None:
    """(reason, detail) when the thresholds reject a clip with these sync metrics, else None.

    Pure, over the stage's own metric names; a missing (None) metric decides nothing, so SyncNet's
    rules apply to SyncNet scores and the proxy's rules to proxy scores.
    """
    if not config.enabled:
        return None
    lse_c, offset = metrics.get("lse_c"), metrics.get("offset")
    corr, proxy_offset = metrics.get("proxy_corr"), metrics.get("proxy_offset")
    if lse_c is not None and lse_c < config.min_confidence:
        return "out_of_sync", f"SyncNet LSE-C {lse_c:.2f} is below sync.min_confidence={config.min_confidence}"
    if offset is not None and abs(offset) > config.max_abs_offset:
        return "av_offset", f"SyncNet AV offset {offset} frames exceeds sync.max_abs_offset={config.max_abs_offset}"
    if corr is not None and corr < config.proxy_min_corr:
        return "out_of_sync", f"mouth/audio correlation {corr:.2f} is below sync.proxy_min_corr={config.proxy_min_corr}"
    if proxy_offset is not None and abs(proxy_offset) > config.proxy_max_abs_offset:
        return "av_offset", (f"mouth/audio offset {proxy_offset} frames exceeds "
                             f"sync.proxy_max_abs_offset={config.proxy_max_abs_offset}")
    return None


# ------------------------------------------------------------------------------- embedded default
def audio_envelope(audio_16k: np.ndarray, band_hz: tuple[float, float]) -> np.ndarray:
    """Log RMS of the speech band per 25 fps video frame, [n_frames]."""
    from scipy.signal import butter, sosfiltfilt

    audio = np.asarray(audio_16k, dtype=np.float64)
    if len(audio) > 30:
        audio = sosfiltfilt(butter(4, band_hz, btype="band", fs=SAMPLE_RATE, output="sos"), audio)
    n = len(audio) // SAMPLES_PER_FRAME
    frames = audio[: n * SAMPLES_PER_FRAME].reshape(n, SAMPLES_PER_FRAME)
    return np.log(np.sqrt((frames ** 2).mean(axis=1)) + 1e-4)


def _standardise(x: np.ndarray) -> np.ndarray:
    std = x.std()
    return (x - x.mean()) / std if std > 1e-8 else np.zeros_like(x)


def lag_correlations(mouth: np.ndarray, envelope: np.ndarray, max_lag: int) -> np.ndarray:
    """Pearson correlation of mouth[t] with envelope[t + lag] for lag = -max_lag..max_lag."""
    n = min(len(mouth), len(envelope))
    m, e = mouth[:n], envelope[:n]
    out = np.zeros(2 * max_lag + 1)
    for i, lag in enumerate(range(-max_lag, max_lag + 1)):
        a, b = (m[: n - lag], e[lag:]) if lag >= 0 else (m[-lag:], e[: n + lag])
        if len(a) > 2:
            a, b = _standardise(a), _standardise(b)
            out[i] = float((a * b).mean())
    return out


def proxy_sync(mouth: np.ndarray, audio_16k: np.ndarray, config: SyncConfig) -> dict[str, float | int] | None:
    """Mouth-opening vs audio-envelope sync: best correlation, its offset and peak ratio; None without a face.

    The offset follows SyncNet's sign: > 0 means the audio must be delayed by that many frames.
    """
    valid = ~np.isnan(mouth)
    if valid.sum() < 2 * config.proxy_max_search_offset:
        return None
    idx = np.arange(len(mouth))
    filled = np.interp(idx, idx[valid], mouth[valid])
    corr = lag_correlations(_standardise(filled), _standardise(audio_envelope(audio_16k, config.proxy_band_hz)),
                            config.proxy_max_search_offset)
    best = int(np.argmax(corr))
    median = float(np.median(np.abs(corr)))
    return {
        "proxy_corr": round(float(corr[best]), 4),
        "proxy_offset": -(best - config.proxy_max_search_offset),
        "proxy_peak_ratio": round(float(corr[best]) / median, 3) if median > 1e-8 else 0.0,
        "proxy_face_ratio": round(float(valid.mean()), 4),
    }


def mouth_track(clip: Clip, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: mouth opening (NaN = no face) and the face-mesh box in clip pixels (NaN = no face)."""
    from vividhead.models.face_mesh import mesh_track

    return mesh_track((rgb for _, rgb in iter_frames(clip_video(clip))), max_side)


def shift_audio(audio_16k: np.ndarray, frames: int) -> np.ndarray:
    """Delay (frames > 0) or advance (frames < 0) audio by whole video frames, keeping its length."""
    shift = frames * SAMPLES_PER_FRAME
    out = np.zeros_like(audio_16k)
    if shift >= 0:
        out[shift:] = audio_16k[: len(audio_16k) - shift]
    else:
        out[: shift] = audio_16k[-shift:]
    return out


def wav_bytes(audio_16k: np.ndarray) -> bytes:
    """16 kHz mono PCM s16 wav."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, audio_16k, SAMPLE_RATE, subtype="PCM_16", format="WAV")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- stage
class SyncStage(ClipStage):
    """SyncNet LSE-C / LSE-D / offset with weights; the mouth-envelope proxy without."""

    name: ClassVar[str] = "sync"
    num_gpus: ClassVar[float] = 0.25
    metric_types: ClassVar[dict[str, str]] = {
        "method": "str",               # "syncnet" or "proxy"
        "lse_d": "float",              # SyncNet: min mean distance (lower is better)
        "lse_c": "float",              # SyncNet: median - min distance (higher is better)
        "offset": "int",               # SyncNet: AV offset in frames at the minimum
        "windows": "int",              # SyncNet: 5-frame windows scored
        "audio_shift": "int",          # frames the audio was delayed (+) or advanced (-) to correct the offset
        "proxy_corr": "float",         # proxy: best mouth/envelope correlation
        "proxy_offset": "int",         # proxy: offset of the best correlation (SyncNet sign)
        "proxy_peak_ratio": "float",   # proxy: best correlation / median |correlation|
        "proxy_face_ratio": "float",   # proxy: share of frames where the face mesh found a face
    }

    def __init__(self, config: SyncConfig | None = None, weights: Weights | None = None) -> None:
        self.config = config or SyncConfig()
        self.weights = weights or Weights()
        self.model = None

    def mode(self) -> Literal["weights", "default", "skipped"]:
        if not self.config.enabled:
            return "skipped"
        return "weights" if self.weights.available("syncnet") else "default"

    def reason(self) -> str:
        if not self.config.enabled:
            return "disabled in the build config"
        path = self.weights.syncnet
        if path is None:
            return "no syncnet weights configured: mouth-opening proxy (sync.proxy_*)"
        if not path.exists():
            return f"syncnet weights {path} do not exist: mouth-opening proxy (sync.proxy_*)"
        return f"SyncNet from {path}"

    def setup(self) -> None:
        if self.mode() == "weights":
            from vividhead.models.syncnet import load_syncnet

            self.model = load_syncnet(self.weights.syncnet)   # raises a clear error when unreadable

    def teardown(self) -> None:
        self.model = None

    def process(self, clip: Clip) -> StageResult:
        if not self.config.enabled:
            return StageResult()
        start = time.perf_counter()
        result = self._syncnet(clip) if self.model is not None else self._proxy(clip)
        result.seconds = time.perf_counter() - start
        return result

    def _syncnet(self, clip: Clip) -> StageResult:
        from vividhead.models.syncnet import score_sync

        c = self.config
        audio = read_audio(clip)
        boxes = clip.face_track
        if boxes is None:
            boxes = mouth_track(clip, c.proxy_max_resolution)[1]
        if min(len(boxes), len(audio) // SAMPLES_PER_FRAME) < 6:
            return StageResult(metrics={"method": "syncnet"}, reject="too_short_for_sync",
                               detail="SyncNet needs at least 6 frames of video and audio")
        frames = (rgb for _, rgb in iter_frames(clip_video(clip)))
        score = score_sync(self.model, frames, audio, boxes, vshift=c.max_search_offset, batch_size=c.batch_size)
        if score is None:
            return StageResult(metrics={"method": "syncnet"}, reject="no_face_for_sync",
                               detail="the face track holds no face, so SyncNet cannot score the clip")
        result = StageResult(metrics={"method": "syncnet", "lse_d": round(score.lse_d, 4),
                                      "lse_c": round(score.lse_c, 4), "offset": score.offset,
                                      "windows": score.n_windows, "audio_shift": 0})
        if c.correct_offset and 0 < abs(score.offset) <= c.max_correct_offset:
            result.outputs["wav"] = wav_bytes(shift_audio(audio, score.offset))
            result.metrics["audio_shift"] = score.offset
        decision = decide({"lse_c": score.lse_c, "offset": score.offset}, c)   # the unrounded LSE-C
        if decision is not None:
            result.reject, result.detail = decision
        return result

    def _proxy(self, clip: Clip) -> StageResult:
        c = self.config
        mouth, _ = mouth_track(clip, c.proxy_max_resolution)
        found = proxy_sync(mouth, read_audio(clip), c)
        if found is None:
            return StageResult(metrics={"method": "proxy"}, reject="no_face_for_sync",
                               detail="the face mesh found too few faces to measure lip sync")
        result = StageResult(metrics={"method": "proxy", **found})
        decision = decide(found, c)
        if decision is not None:
            result.reject, result.detail = decision
        return result
