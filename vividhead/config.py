"""Configuration of `vividhead build`: the sources file and the build config, validated with pydantic.

`SourcesFile` is what a user lists in sources.yaml. `BuildConfig` holds every threshold of the
build with its default (`vividhead build --print-config` prints it). `vividhead.configfile` reads
either one and turns every problem into a `ConfigError` that names the file and the field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from vividhead.configfile import load_yaml_model
from vividhead.configfile import StrictModel as _Strict
from vividhead.pipelines.filter_config import AnnotateConfig, OcclusionConfig, SpeechConfig, SyncConfig
from vividhead.weights import Weights

ATTRIBUTE_NAMES = ("language", "gender", "age", "ethnicity")


# ----------------------------------------------------------------------------------------- sources


class TimeRange(_Strict):
    """A given [start, end) range in seconds, for datasets that ship timestamps."""

    start: float = Field(ge=0)
    end: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_pair(cls, value: Any) -> Any:
        if isinstance(value, (list, tuple)) and len(value) == 2:
            return {"start": value[0], "end": value[1]}
        return value

    @model_validator(mode="after")
    def _ordered(self) -> "TimeRange":
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be greater than start ({self.start})")
        return self


class GivenAttributes(_Strict):
    """Attributes known for a source; they are recorded with provenance `given`."""

    language: str | None = None
    gender: str | None = None
    age: str | None = None
    ethnicity: str | None = None

    @field_validator("age", mode="before")
    @classmethod
    def _age_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, (int, float)) else value


class SourceEntry(_Strict):
    """One entry of sources.yaml: a file, glob, directory (`path`) or an http(s) URL (`url`)."""

    path: str | None = None
    url: str | None = None
    dataset: str = "default"
    ranges: list[TimeRange] = Field(default_factory=list)
    attributes: GivenAttributes = Field(default_factory=GivenAttributes)
    recursive: bool = True                          # directories: include sub-directories

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            key = "url" if value.startswith(("http://", "https://")) else "path"
            return {key: value}
        return value

    @model_validator(mode="after")
    def _one_location(self) -> "SourceEntry":
        if (self.path is None) == (self.url is None):
            raise ValueError("give exactly one of `path` (file, glob or directory) or `url` (http/https)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https://, got {self.url!r}")
        return self


class SourcesFile(_Strict):
    """sources.yaml: a list of sources, plus defaults applied to entries that do not set them."""

    sources: list[SourceEntry] = Field(min_length=1)
    extensions: list[str] = Field(
        default_factory=lambda: [".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".flv", ".ts", ".mpg", ".mpeg"]
    )  # file name endings a directory or glob expands to


# ------------------------------------------------------------------------------------------- build


class SegmentConfig(_Strict):
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


class NormalizeConfig(_Strict):
    """Stage 4: constant frame rate and audio format of every clip."""

    fps: int = Field(25, gt=0)                       # paper: 25 fps
    sample_rate: int = Field(16000, gt=0)            # 16 kHz mono


class FaceConfig(_Strict):
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


class FlowConfig(_Strict):
    """Stage 6: abrupt transitions that scene scoring missed, found with DIS optical flow."""

    enabled: bool = True
    width: int = Field(160, ge=32)                   # flow is computed on frames this wide
    max_residual: float = Field(0.12, gt=0)          # reject when the flow-warped previous frame differs
    #                                                  from the next by more than this (mean |diff| / 255)


class VisibilityConfig(_Strict):
    """Stage 7: faces sampled at 1 fps inside the crop."""

    enabled: bool = True
    sample_fps: float = Field(1.0, gt=0)             # paper: one frame per second
    max_missing_ratio: float = Field(0.2, ge=0, le=1)  # reject when more sampled frames than this lack a face
    second_face_min_share: float = Field(0.5, gt=0, le=1)  # another face this size x the speaker's counts as a second one
    max_second_face_ratio: float = Field(0.2, ge=0, le=1)  # reject when more samples than this show a second face
    #                                                    (dev speakers: 0.0; a split screen: 1.0; crowds in passing: 0.2)


class EncodeConfig(_Strict):
    """How each kept clip is encoded (once, as it is cut)."""

    codec: str = "libx264"
    preset: str = "veryfast"                         # the biggest single lever on build time
    crf: int = Field(18, ge=0, le=51)
    audio_bitrate: int = Field(64000, gt=0)          # AAC, bits per second
    threads: int = Field(0, ge=0)                    # 0 = encoder default


class RunConfig(_Strict):
    """How the build runs: downloads, retries and faults."""

    download_timeout: float = Field(30.0, gt=0)      # seconds without data before a URL download fails
    max_download_bytes: int = Field(20 * 1024**3, gt=0)  # larger downloads are rejected
    max_retries: int = Field(2, ge=0)                # Ray retries of a task whose worker died


class BuildConfig(_Strict):
    """Every setting of `vividhead build`, with its default."""

    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    normalize: NormalizeConfig = Field(default_factory=NormalizeConfig)
    face: FaceConfig = Field(default_factory=FaceConfig)
    flow: FlowConfig = Field(default_factory=FlowConfig)
    visibility: VisibilityConfig = Field(default_factory=VisibilityConfig)
    occlusion: OcclusionConfig = Field(default_factory=OcclusionConfig)
    speech: SpeechConfig = Field(default_factory=SpeechConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    encode: EncodeConfig = Field(default_factory=EncodeConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    weights_manifest: Path | None = None             # default: manifests/weights.yaml of the project, if present
    weights: dict[str, Path | None] = Field(default_factory=dict)  # overrides of single weights entries

    @field_validator("weights")
    @classmethod
    def _known_weights(cls, value: dict[str, Path | None]) -> dict[str, Path | None]:
        unknown = sorted(set(value) - set(Weights.model_fields))
        if unknown:
            raise ValueError(f"unknown weights {unknown}; expected some of {sorted(Weights.model_fields)}")
        return value

    def content_hash(self) -> str:
        """Hash of the fields that change a clip's bytes or the raw metrics of stages 3-7.

        Segmentation, normalisation, face detection and crop, flow and visibility analysis, encoder;
        not the thresholds that only decide (DECISION_FIELDS) and not the model stages 8-11.
        """
        data = {}
        for section in ("segment", "normalize", "face", "flow", "visibility", "encode"):
            values = getattr(self, section).model_dump(mode="json")
            data[section] = {k: v for k, v in values.items() if k not in DECISION_FIELDS.get(section, ())}
        return _hash(data)

    def stages_hash(self, weights: Weights) -> str:
        """Hash of what the model stages 8-11 compute: their config sections without pure thresholds, and their weights."""
        from vividhead.pipelines.decisions import filter_threshold_fields

        thresholds = filter_threshold_fields()
        files = {name: _file_stamp(path) for name, path in weights if name not in ("scrfd", "flashhead")}
        sections = {k: {field: value for field, value in getattr(self, k).model_dump(mode="json").items()
                        if field not in thresholds.get(k, ())}
                    for k in ("occlusion", "speech", "sync", "annotate")}
        return _hash({"sections": sections, "weights": files})

    def config_hash(self) -> str:
        """Hash of the whole config, weights included."""
        return _hash(self.model_dump(mode="json"))


# Thresholds of stages 5-7 that only decide; a change re-decides clips from their stored metrics.
DECISION_FIELDS: dict[str, tuple[str, ...]] = {
    "face": ("max_upscale",),
    "flow": ("max_residual",),
    "visibility": ("max_missing_ratio", "max_second_face_ratio", "enabled"),
}


def _file_stamp(path: Path | None) -> Any:
    """A weights path with its size and modification time, or None when it is absent."""
    if path is None or not Path(path).exists():
        return None
    stat = Path(path).stat()
    return [str(path), stat.st_size, stat.st_mtime_ns]


def _hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


# -------------------------------------------------------------------------------------------- load

def load_build_config(path: Path | None) -> BuildConfig:
    """The build config from `path`, or the defaults when no path is given."""
    if path is None:
        return BuildConfig()
    config = load_yaml_model(BuildConfig, path)
    base = Path(path).resolve().parent
    if config.weights_manifest is not None and not config.weights_manifest.is_absolute():
        config = config.model_copy(update={"weights_manifest": base / config.weights_manifest})
    weights = {k: (base / v if v is not None and not v.is_absolute() else v) for k, v in config.weights.items()}
    return config.model_copy(update={"weights": weights})


def default_weights_manifest() -> Path:
    """manifests/weights.yaml beside the package (present in a source checkout)."""
    return Path(__file__).resolve().parents[1] / "manifests" / "weights.yaml"


def resolve_weights(config: BuildConfig) -> Weights:
    """The weights manifest with the config's overrides applied."""
    from vividhead.weights import load_weights_manifest

    manifest = config.weights_manifest or default_weights_manifest()
    weights = load_weights_manifest(manifest) if manifest.exists() else Weights()
    return weights.model_copy(update=config.weights)
