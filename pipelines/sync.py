"""Stage 10, sync: audio-visual synchronisation of a clip.

With weights: SyncNet (`syncnet_v2.model`) scored as the reference tool does, reusing the clip's
face track; records `sync.lse_d`, `sync.lse_c`, `sync.offset`, and rejects below
`min_confidence` or above `max_abs_offset`. A small offset can be corrected by shifting the audio
(the shifted wav goes to `StageResult.outputs["wav"]`, recorded as `sync.audio_shift`).

Without weights (embedded default): the weight-free check of `pipelines/lipsync.py` (the canonical
correlation of the mouth patches' motion, read where the face mesh puts the mouth, with the speech's mel
bands, with an offset search and a confidence). It records
`sync.proxy_lag`, `sync.proxy_z`, `sync.proxy_corr`, `sync.proxy_view`, never LSE, and a verdict: `in_sync`,
`out_of_sync` (rejected as `av_offset`) or `unsure` (kept, with `sync.verified` false and
`sync.unsure_reason`, unless `keep_unsure` is false). Both paths record `sync.verdict` and `sync.verified`.

The rejection rules over stored metrics are the pure function `decide`; its row in
`pipelines/stages.py` names the threshold-to-metric map that resume and `inspect --what-if` re-decide with.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np

from vividhead.media import wav_bytes
from vividhead.models.face_mesh import lip_track, mouth_track
from vividhead.pipelines import lipsync
from vividhead.pipelines.clip_media import SAMPLE_RATE, clip_video, iter_frames, read_audio
from vividhead.pipelines.filter_config import SyncConfig
from vividhead.pipelines.records import Clip, ClipStage, StageResult
from vividhead.weights import Weights

SAMPLES_PER_FRAME = SAMPLE_RATE // 25


def decide(metrics: Mapping[str, Any], config: SyncConfig) -> tuple[str, str] | None:
    """(reason, detail) when the thresholds reject a clip with these sync metrics, else None.

    Pure, over the stage's own metric names; a missing (None) metric decides nothing, so SyncNet's
    rules apply to SyncNet scores and the weight-free check's verdict to its own measures.
    """
    if not config.enabled:
        return None
    lse_c, offset = metrics.get("lse_c"), metrics.get("offset")
    if lse_c is not None and lse_c < config.min_confidence:
        return "out_of_sync", f"SyncNet LSE-C {lse_c:.2f} is below sync.min_confidence={config.min_confidence}"
    if offset is not None and abs(offset) > config.max_abs_offset:
        return "av_offset", f"SyncNet AV offset {offset} frames exceeds sync.max_abs_offset={config.max_abs_offset}"
    if lse_c is not None or offset is not None:
        return None                                    # SyncNet scored the clip; its verdict follows its rules
    verdict, lag, z = metrics.get("verdict"), metrics.get("proxy_lag"), metrics.get("proxy_z")
    if verdict == "out_of_sync":
        measured = f"{lag} frames apart, confidence z {z:.1f}" if lag is not None and z is not None else "apart"
        return "av_offset", (f"the weight-free check found lips and speech {measured}: beyond the natural lead "
                             f"{config.proxy_lead_frames} +- {config.proxy_reject_tolerance} frames, with a peak above "
                             f"sync.proxy_reject_z={config.proxy_reject_z}")
    if verdict == "unsure" and not config.keep_unsure:
        return "sync_unverified", (f"the weight-free check could not verify sync ({metrics.get('unsure_reason')}) "
                                   f"and sync.keep_unsure is false")
    return None


# ------------------------------------------------------------------------------- embedded default
def lip_gaps(clip: Clip, max_side: int, boxes: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """Per frame: inner and outer lip gaps [n, 2] and, if `boxes`, the face-mesh box in clip pixels [n, 4]
    (NaN = no face)."""
    return lip_track((rgb for _, rgb in iter_frames(clip_video(clip))), max_side, boxes)


def mouth_measures(clip: Clip, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per frame: the mouth measures the weight-free check reads, [n, len(face_mesh.MOUTH_COLUMNS)] (NaN = no face),
    and the grey mouth patches [n, PATCH_H, PATCH_W] (one face-mesh pass gives both)."""
    return mouth_track((rgb for _, rgb in iter_frames(clip_video(clip))), max_side)


def shift_audio(audio_16k: np.ndarray, frames: int) -> np.ndarray:
    """Delay (frames > 0) or advance (frames < 0) audio by whole video frames, keeping its length."""
    shift = frames * SAMPLES_PER_FRAME
    out = np.zeros_like(audio_16k)
    if shift >= 0:
        out[shift:] = audio_16k[: len(audio_16k) - shift]
    else:
        out[: shift] = audio_16k[-shift:]
    return out


# ------------------------------------------------------------------------------------------- stage
class SyncStage(ClipStage):
    """SyncNet LSE-C / LSE-D / offset with weights; the weight-free lip-sync check without."""

    name: ClassVar[str] = "sync"
    metric_types: ClassVar[dict[str, str]] = {
        "method": "str",               # "syncnet" or "proxy"
        "lse_d": "float",              # SyncNet: min mean distance (lower is better)
        "lse_c": "float",              # SyncNet: median - min distance (higher is better)
        "offset": "int",               # SyncNet: AV offset in frames at the minimum
        "windows": "int",              # SyncNet: 5-frame windows scored
        "audio_shift": "int",          # frames the audio was delayed (+) or advanced (-) to correct the offset
        "verdict": "str",              # in_sync, out_of_sync or unsure (both methods)
        "verified": "bool",            # true only for in_sync: SyncNet passed, or the check saw a strong peak
        "unsure_reason": "str",        # proxy, when unsure: weak_peak, weak_offset or no_measure
        "proxy_lag": "int",            # proxy: frames the speech trails the lips at the peak (+ = lips lead)
        "proxy_z": "float",            # proxy: the peak's confidence, in SDs above far-shift chance correlations,
                                       # corrected for the number of views searched
        "proxy_corr": "float",         # proxy: the deciding view's value at the peak (canonical: the first canonical
                                       # correlation of mouth and speech components; lips: the averaged correlation)
        "proxy_view": "str",           # proxy: the view that decided, e.g. "canonical motion 4x2 1-8 Hz"
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
            return "no syncnet weights configured: weight-free lip-sync check (sync.proxy_*)"
        if not path.exists():
            return f"syncnet weights {path} do not exist: weight-free lip-sync check (sync.proxy_*)"
        return f"SyncNet from {path}"

    def setup(self) -> None:
        if self.mode() == "weights":
            # Ray worker boundary: SyncNet (torch) loads in the sync actor, and only when its weights are configured.
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
        from vividhead.models.syncnet import score_sync  # Ray worker boundary, as in setup()

        c = self.config
        audio = read_audio(clip)
        boxes = clip.face_track
        if boxes is None:
            boxes = lip_gaps(clip, c.proxy_max_resolution, boxes=True)[1]
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
            result.outputs["wav"] = wav_bytes(shift_audio(audio, score.offset), SAMPLE_RATE)
            result.metrics["audio_shift"] = score.offset
        decision = decide({"lse_c": score.lse_c, "offset": score.offset}, c)   # the unrounded LSE-C
        result.metrics.update({"verdict": "in_sync" if decision is None else "out_of_sync",
                               "verified": decision is None})
        if decision is not None:
            result.reject, result.detail = decision
        return result

    def _proxy(self, clip: Clip) -> StageResult:
        mouth, patches = mouth_measures(clip, self.config.proxy_max_resolution)
        return proxy_result(mouth, read_audio(clip), self.config, patches)


def proxy_result(mouth: np.ndarray, audio_16k: np.ndarray, config: SyncConfig,
                 patches: np.ndarray | None = None) -> StageResult:
    """The weight-free check's result on a clip's mouth measures [n, 4] and mouth patches [n, 16, 32]
    (`mouth_measures`) and audio: metrics, verdict, correction."""
    found = lipsync.measure(mouth, audio_16k, config, patches)
    decision = lipsync.decide(found.lag if found else None, found.z if found else None, config)
    metrics: dict[str, Any] = {"method": "proxy", "verdict": decision.verdict, "verified": decision.verdict == "in_sync",
                               "unsure_reason": decision.reason if decision.verdict == "unsure" else None,
                               "audio_shift": decision.audio_shift}
    if found is not None:
        metrics.update({"proxy_lag": found.lag, "proxy_z": round(found.z, 3), "proxy_corr": round(found.corr, 4),
                        "proxy_view": found.view, "proxy_face_ratio": round(found.face_ratio, 4)})
    result = StageResult(metrics=metrics)
    if decision.audio_shift:
        result.outputs["wav"] = wav_bytes(shift_audio(audio_16k, decision.audio_shift), SAMPLE_RATE)
    rejection = decide(metrics, config)
    if rejection is not None:
        result.reject, result.detail = rejection
    return result
