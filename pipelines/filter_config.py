"""Settings and thresholds of the curation stages 3-11, one pydantic model per stage.

The stage table (`pipelines/stages.py`) names each stage's model; the build config has one section
per stage with it (`segment`, `normalize`, `face`, ... `annotate`). Every threshold has its default
here, with where it comes from. Thresholds that only decide (the table's threshold-to-metric map)
are not part of the clip key: changing one re-decides clips from their recorded raw metrics.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vividhead.configfile import StrictModel


# ----------------------------------------------------------------------- stages 3-7: the decode pass


class SegmentConfig(StrictModel):
    """Stage 3: pieces from given timestamps, or from scene cuts scored on small frames."""

    min_seconds: float = Field(5.0, gt=0)            # paper: clips of 5-50 s
    max_seconds: float = Field(50.0, gt=0)           # longer pieces are split
    scene_threshold: float = Field(27.0, gt=0)       # PySceneDetect ContentDetector default (HSV mean delta)
    scene_min_seconds: float = Field(0.6, ge=0)      # no second cut within this time (15 frames at 25 fps)
    analysis_width: int = Field(256, ge=32)          # width of the small frames used for scene scoring
    unit_seconds: float = Field(600.0, gt=0)         # long sources are split into work units of this length

    @model_validator(mode="after")
    def _ordered(self) -> "SegmentConfig":
        if self.max_seconds < self.min_seconds:
            raise ValueError(f"max_seconds ({self.max_seconds}) must be >= min_seconds ({self.min_seconds})")
        return self


class NormalizeConfig(StrictModel):
    """Stage 4: constant frame rate and audio format of every clip."""

    fps: int = Field(25, gt=0)                       # paper: 25 fps
    sample_rate: int = Field(16000, gt=0)            # 16 kHz mono


class FaceConfig(StrictModel):
    """Stage 5: face detection on the first frame, the 512 crop, and tracking at a few fps."""

    detector: Literal["auto", "mediapipe", "scrfd"] = "auto"   # auto: SCRFD when its weights exist
    model_selection: Literal[0, 1] = 1               # mediapipe: 0 = short range (<2 m), 1 = full range
    min_confidence: float = Field(0.5, ge=0, le=1)   # detections below this score are ignored
    detect_fps: float = Field(5.0, gt=0)             # detections per second inside a clip; linear in between
    search_seconds: float = Field(1.0, ge=0)         # a piece may start this late to find its first face
    crop_scale: float = Field(2.0, gt=1)             # crop side = this x the larger side of the face box
    size: int = Field(512, gt=0)                     # output side in pixels
    max_upscale: float = Field(1.5, gt=0)            # reject when the crop must be enlarged more than this
    max_drift: float = Field(0.25, gt=0)             # end the clip where the face has moved this share of the crop
    #                                                  side from its start position (dev speakers: <= 0.18)


class FlowConfig(StrictModel):
    """Stage 6: abrupt transitions that scene scoring missed, found with DIS optical flow."""

    enabled: bool = True
    width: int = Field(160, ge=32)                   # flow is computed on frames this wide
    max_residual: float = Field(0.12, gt=0)          # reject when the flow-warped previous frame differs
    #                                                  from the next by more than this (mean |diff| / 255)


class VisibilityConfig(StrictModel):
    """Stage 7: faces sampled at 1 fps inside the crop."""

    enabled: bool = True
    sample_fps: float = Field(1.0, gt=0)             # paper: one frame per second
    max_missing_ratio: float = Field(0.2, ge=0, le=1)  # reject when more sampled frames than this lack a face
    second_face_min_share: float = Field(0.5, gt=0, le=1)  # another face this size x the speaker's counts as a second one
    max_second_face_ratio: float = Field(0.2, ge=0, le=1)  # reject when more samples than this show a second face
    #                                                    (dev speakers: 0.0; a split screen: 1.0; crowds in passing: 0.2)


# ------------------------------------------------------------------- stages 8-11: the model stages


class _StageConfig(StrictModel):
    enabled: bool = True   # False records the stage as "skipped" and lets every clip through


class OcclusionConfig(_StageConfig):
    """Stage 8: a hand over the face (DWpose wholebody with weights, mediapipe hands without)."""

    sample_fps: float = Field(5.0, gt=0)              # frames per second examined (hands move slowly)
    keypoint_score: float = Field(0.3, ge=0, le=1)     # DWpose: hand keypoints below this score are ignored
    hand_confidence: float = Field(0.5, ge=0, le=1)    # mediapipe hands: min detection confidence
    face_margin: float = Field(0.0, ge=0)              # grow the face box by this fraction of its side
    min_points_in_face: int = Field(3, ge=1)           # a frame is occluded when this many hand points lie in the face box
    max_occluded_ratio: float = Field(0.2, ge=0, le=1) # reject above this share of occluded sampled frames


class SpeechConfig(_StageConfig):
    """Stage 9: voice activity (silero-vad, which ships its model)."""

    vad_threshold: float = Field(0.5, ge=0, le=1)      # silero speech probability threshold (its default)
    min_speech_ms: int = Field(250, ge=0)              # shorter speech runs are dropped (silero default)
    min_silence_ms: int = Field(100, ge=0)             # shorter pauses do not split speech (silero default)
    min_speech_ratio: float = Field(0.5, ge=0, le=1)   # reject clips where less than this share is speech


class SyncConfig(_StageConfig):
    """Stage 10: audio-visual sync. SyncNet with weights, a mouth-opening proxy without."""

    # SyncNet (syncnet_v2.model), computed as the reference syncnet_python tool does.
    max_search_offset: int = Field(15, ge=1)           # offsets searched: -15..+15 frames (reference vshift)
    min_confidence: float = Field(3.0)                 # reject LSE-C below this (LatentSync's value)
    max_abs_offset: int = Field(6, ge=0)               # reject |AV offset| above this many frames (LatentSync)
    batch_size: int = Field(64, ge=1)                  # SyncNet windows per forward pass
    # Optional correction: shift the audio by the measured offset when it is small and not zero.
    correct_offset: bool = False                       # rewrite the clip's wav shifted by the offset
    max_correct_offset: int = Field(3, ge=0)           # only offsets up to this many frames are corrected
    # Embedded default (pipelines/lipsync.py): mouth motion against speech, with an offset search and a
    # confidence; recorded as sync.proxy_*, never as LSE. Signal, features, band, lead window and levels chosen
    # by leave-one-speaker-out cross-validation on the dev footage and its shifted and dubbed copies
    # (docs/filters.md, benchmarks/sync_cv.py).
    proxy_max_search_offset: int = Field(30, ge=1)     # lags searched: +-30 frames (1.2 s), so 1 s shifts are seen
    # canonical: mouth patches against mel bands (canonical correlation); lips: mesh measures against the envelope
    proxy_signal: Literal["canonical", "lips"] = "canonical"
    proxy_look: Literal["motion", "still"] = "motion"  # canonical: the mouth patches' change per frame, or the patches
    proxy_mouth_dims: int = Field(4, ge=1)             # canonical: principal components of the mouth patches
    proxy_speech_dims: int = Field(2, ge=1)            # canonical: principal components of the log mel bands
    proxy_mel_bands: int = Field(16, ge=1)             # canonical: mel bands of the speech
    proxy_mel_hz: tuple[float, float] = (100.0, 7000.0)  # canonical: the mel bands' range
    proxy_features: tuple[Literal["gap", "area", "dark"], ...] = Field(("area", "dark"), min_length=1)  # lips only
    proxy_bands: tuple[tuple[float, float] | None, ...] = Field(((1.0, 8.0),), min_length=1)  # None: unfiltered
    proxy_lead_frames: int = 1                         # natural lead of the mouth over the sound (frames)
    proxy_lead_tolerance: int = Field(3, ge=0)         # verified: lag within lead +- this (300 ms shifts fall outside)
    proxy_reject_tolerance: int = Field(5, ge=0)       # rejected only at lags beyond lead +- this
    proxy_min_z: float = Field(4.72)                   # verified: peak at least this far above chance (corrected z)
    proxy_reject_z: float = Field(4.83)                # out of sync: a peak this strong beyond the reject window
    proxy_max_correct_offset: int = Field(8, ge=0)     # with correct_offset: lags beyond the reject window, up to this far
    keep_unsure: bool = True                           # False rejects clips the check could not verify
    proxy_band_hz: tuple[float, float] = (300.0, 3000.0)  # speech band of the audio envelope
    proxy_max_resolution: int = Field(256, ge=64)      # frames are downscaled to this side for the face mesh


class AnnotateConfig(_StageConfig):
    """Stage 11: face mask, streaming audio features (audio.npy), gender, age and language."""

    mask: bool = True                                  # write mask.png of the first frame (face mesh hull)
    audio_features: bool = True                        # write audio.npy (wav2vec2 with weights, log-mel without)
    audio_variant: Literal["lite", "pro"] = "lite"     # streaming chunk geometry: 24 (Lite) / 28 (Pro) new frames
    attribute_frames: int = Field(5, ge=1)             # frames sampled for gender/age; the median age and majority gender win
    language_seconds: float = Field(30.0, gt=0)        # audio given to the language-ID model (Whisper takes 30 s)
    min_language_prob: float = Field(0.5, ge=0, le=1)  # below this the language stays "unknown"
