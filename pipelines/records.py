"""Typed records that flow through `vividhead build`: sources, clips and stage results.

A `Source` is one input video (or a given time range of one). A `Clip` is one candidate piece
of a source, 25 fps and 16 kHz, cropped to 512x512 around the face. Every stage returns a
`StageResult`: its raw metrics, the sample files it adds, and at most one rejection reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

import numpy as np

from vividhead.models.face_detect import Face

Status = Literal["kept", "rejected", "skipped", "failed"]
STATUSES: tuple[str, ...] = get_args(Status)
MetricValue = float | int | str | bool | None


@dataclass(frozen=True)
class Attribute:
    """One annotated attribute value and where it came from."""

    value: str = "unknown"
    provenance: Literal["given", "model", "unknown"] = "unknown"


@dataclass(frozen=True)
class FaceBox:
    """A face box given by a list, in the units of a reference frame.

    Corners (x0, y0, x1, y1) are in a `ref_width` x `ref_height` frame: 1 x 1 means fractions of the
    frame; a list's pixel boxes give its own reference size. Only a reference height (HDTF gives the
    video's height) scales both axes by it. A box with x0 == x1 and y0 == y1 is a point (AVSpeech's
    face centre).
    """

    x0: float
    y0: float
    x1: float
    y1: float
    ref_width: float | None = 1.0
    ref_height: float | None = 1.0

    def in_frame(self, width: int, height: int) -> tuple[float, float, float, float]:
        """The box in the pixels of a `width` x `height` frame."""
        sy = height / self.ref_height if self.ref_height else 1.0
        sx = width / self.ref_width if self.ref_width else sy
        return self.x0 * sx, self.y0 * sy, self.x1 * sx, self.y1 * sy


SourceKind = Literal["path", "url", "video"]


@dataclass(frozen=True)
class Source:
    """One input video as listed (or expanded) from sources.yaml."""

    source_id: str                                    # stable id: the dataset name plus path or URL
    uri: str                                          # local path, http(s) URL of a file, or a video page URL
    dataset: str = "default"
    ranges: tuple[tuple[float, float], ...] = ()      # given [start, end) seconds; empty = detect scenes
    attributes: tuple[tuple[str, str], ...] = ()      # given attributes: (name, value)
    md5: str | None = None                            # of the bytes, filled after download/hash
    kind: SourceKind = "path"                         # path: local; url: a file over http(s); video: via yt-dlp
    boxes: tuple[FaceBox | None, ...] = ()            # a listed face box per range (empty: none given)
    fetched: tuple[tuple[str, str], ...] = ()         # how a remote source was fetched: format id, resolution, codec

    def box(self, index: int) -> FaceBox | None:
        """The listed face box of range `index`, if the list gave one."""
        return self.boxes[index] if index < len(self.boxes) else None


@dataclass
class StageResult:
    """What one stage decided about one clip."""

    metrics: dict[str, MetricValue] = field(default_factory=dict)   # raw values, unprefixed names
    reject: str | None = None                                        # machine-readable reason, e.g. "no_speech"
    detail: str | None = None                                        # one human-readable sentence
    outputs: dict[str, bytes] = field(default_factory=dict)          # sample files to add, e.g. "audio.npy"
    attributes: dict[str, Attribute] = field(default_factory=dict)   # annotated attributes
    seconds: float = 0.0                                             # wall time spent


@dataclass
class Frame:
    """One 25 fps frame of the decode pass (stages 3-7), in the forms its observers read.

    `crop` and `clip_index` are set while a clip is open; `faces()` detects the faces inside the
    crop at most once per frame, however many observers ask.
    """

    index: int                                        # frame number in the work unit
    rgb: np.ndarray                                   # the full frame
    small: np.ndarray                                 # a copy `segment.analysis_width` wide
    crop: np.ndarray | None = None                    # the open clip's square crop (face.size)
    clip_index: int = -1                              # frame number in the open clip
    detect: Callable[[np.ndarray], list[Face]] | None = None
    _faces: list[Face] | None = None

    def faces(self) -> list[Face]:
        """Faces inside the crop (detected once, then remembered)."""
        if self._faces is None:
            self._faces = self.detect(self.crop) if self.detect is not None and self.crop is not None else []
        return self._faces


class Observer:
    """A decode-pass stage over one clip: sees each of its frames once, then gives its result."""

    def update(self, frame: Frame) -> None:
        raise NotImplementedError

    def finish(self) -> StageResult:
        raise NotImplementedError


@dataclass
class Clip:
    """One candidate clip, staged on disk as a 512x512 25 fps mp4 and a 16 kHz mono wav."""

    key: str
    source: Source
    start: float                                      # seconds in the source
    end: float
    crop_box: tuple[int, int, int] | None = None      # (x, y, side) in source pixels, after rotation
    n_frames: int = 0
    video_path: str | None = None                     # staged mp4 (H.264 + AAC)
    wav_path: str | None = None                       # staged wav
    face_track: np.ndarray | None = None              # [n_frames, 4] x0,y0,x1,y1 in crop pixels, NaN = no face
    attributes: dict[str, Attribute] = field(default_factory=dict)
    metrics: dict[str, MetricValue] = field(default_factory=dict)   # "stage.metric" -> value
    outputs: dict[str, bytes] = field(default_factory=dict)          # extra sample files
    timings: dict[str, float] = field(default_factory=dict)          # stage -> seconds
    status: Status = "kept"
    reject_stage: str | None = None
    reject_reason: str | None = None
    reject_detail: str | None = None

    def apply(self, stage: str, result: StageResult) -> None:
        """Record a stage's result; the first rejection wins and later stages see status != kept."""
        self.metrics.update({f"{stage}.{name}": value for name, value in result.metrics.items()})
        self.outputs.update(result.outputs)
        self.attributes.update(result.attributes)
        self.timings[stage] = result.seconds
        if result.reject and self.status == "kept":
            self.status = "rejected"
            self.reject_stage, self.reject_reason, self.reject_detail = stage, result.reject, result.detail


class ClipStage:
    """A model stage over staged 512x512 clips (stages 8-11): set up once per actor, then per clip.

    Subclasses set `name`, declare `metric_types` (metric name -> "float" | "int" | "str" | "bool")
    so the manifest schema is fixed, and report how they run in `mode()` and why in `reason()`.
    Their row in `pipelines/stages.py` gives their config, thresholds, decision and resources.
    """

    name: ClassVar[str]
    metric_types: ClassVar[dict[str, str]] = {}

    def mode(self) -> Literal["weights", "default", "skipped"]:
        """Whether this stage runs with real weights, its embedded default, or is skipped."""
        return "default"

    def reason(self) -> str:
        """One line on why the stage runs in its `mode()` (which weights, which fallback); `--check-weights` prints it."""
        return {"weights": "runs with its configured weights", "default": "runs with its embedded default",
                "skipped": "skipped"}.get(self.mode(), "")

    def setup(self) -> None:
        """Load weights; called once per worker/actor."""

    def process(self, clip: Clip) -> StageResult:
        raise NotImplementedError

    def teardown(self) -> None:
        """Release models and files."""
