"""Stage 11, annotate: face mask, streaming audio features (`audio.npy`), gender, age and language.

- `mask.png`: the face-mesh hull of the first frame (unless an earlier stage already wrote one).
- `audio.npy`: float16 [frames, layers, dim], one row per video frame, computed by
  `vividhead.models.audio_features.streaming_features` (the function the streaming engine's cache
  uses): wav2vec2 from a local folder with weights, log-mel on the same windows without.
- Attributes: a value given in sources.yaml wins (provenance "given"); else the model's value
  (provenance "model"); else "unknown". Gender/age come from insightface genderage ONNX on a few
  frames (majority gender, median age); language from a local Whisper folder. Ethnicity has no
  model here, so it is given or unknown.
"""

from __future__ import annotations

import time
from typing import ClassVar, Literal

import numpy as np

from vividhead.media import npy_bytes, png_bytes
from vividhead.models.attributes import GenderAge, LanguageId
from vividhead.models.audio_features import frames_for_samples, load_audio_encoder, streaming_features
from vividhead.models.face_mesh import FaceMesh
from vividhead.models.geometry import GEOMETRY
from vividhead.pipelines.clip_media import SAMPLE_RATE, clip_video, iter_frames, read_audio
from vividhead.pipelines.filter_config import AnnotateConfig
from vividhead.pipelines.records import Attribute, Clip, ClipStage, StageResult
from vividhead.weights import Weights

ATTRIBUTES = ("gender", "age", "ethnicity", "language")


def _describe(weights: Weights, name: str, label: str, fallback: str) -> str:
    path = getattr(weights, name)
    if weights.available(name):
        return f"{label}: {path}"
    return f"{label}: {'not configured' if path is None else f'{path} does not exist'} -> {fallback}"


def _torch_device() -> str:
    """cuda when torch sees a GPU, else cpu."""
    # Ray worker boundary: torch loads in the stage's actor, not with the stage table, and only when a
    # torch model (wav2vec2, the language model) is configured: importing it takes seconds.
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class AnnotateStage(ClipStage):
    """Mask, audio features and attributes of a kept clip."""

    name: ClassVar[str] = "annotate"
    metric_types: ClassVar[dict[str, str]] = {
        "mask_ratio": "float",         # share of the first frame covered by the face mask
        "audio_encoder": "str",        # "wav2vec2" or "logmel"
        "audio_frames": "int",         # rows of audio.npy
        "audio_layers": "int",
        "audio_dim": "int",
        "audio_stride": "int",         # new frames per streaming chunk the rows were computed with
        "age_years": "float",          # model estimate (median over sampled frames), before any given value
        "male_share": "float",         # share of sampled frames the model called male
        "language_prob": "float",      # probability of the detected language among Whisper's languages
    }

    def __init__(self, config: AnnotateConfig | None = None, weights: Weights | None = None) -> None:
        self.config = config or AnnotateConfig()
        self.weights = weights or Weights()
        self.encoder = self.genderage = self.language = None

    def mode(self) -> Literal["weights", "default", "skipped"]:
        if not self.config.enabled:
            return "skipped"
        used = [n for n in ("wav2vec2", "genderage", "language_id") if self.weights.available(n)]
        return "weights" if used else "default"

    def reason(self) -> str:
        if not self.config.enabled:
            return "disabled in the build config"
        return "; ".join([
            _describe(self.weights, "wav2vec2", "audio.npy wav2vec2", "log-mel default"),
            _describe(self.weights, "genderage", "gender/age", "given or unknown"),
            _describe(self.weights, "language_id", "language", "given or unknown"),
        ])

    def setup(self) -> None:
        if not self.config.enabled:
            return
        wav2vec2 = self.weights.available("wav2vec2") if self.config.audio_features else None
        language_id = self.weights.available("language_id")
        device = _torch_device() if wav2vec2 or language_id else "cpu"   # the log-mel default needs no torch
        if self.config.audio_features:
            self.encoder = load_audio_encoder(wav2vec2, device=device)
        if self.weights.available("genderage"):
            self.genderage = GenderAge(self.weights.genderage)
        if language_id:
            self.language = LanguageId(language_id, device=device)

    def teardown(self) -> None:
        self.encoder = self.genderage = self.language = None

    def process(self, clip: Clip) -> StageResult:
        if not self.config.enabled:
            return StageResult()
        start = time.perf_counter()
        given = dict(clip.source.attributes)
        result = StageResult()
        audio = read_audio(clip)
        self._mask_and_faces(clip, given, result)
        if self.encoder is not None:
            self._audio_features(clip, audio, result)
        self._language(audio, given, result)
        for name in ATTRIBUTES:
            if name in given:
                result.attributes[name] = Attribute(str(given[name]), "given")
            else:
                result.attributes.setdefault(name, Attribute())
        result.seconds = time.perf_counter() - start
        return result

    # ----------------------------------------------------------------------------------- parts
    def _audio_features(self, clip: Clip, audio: np.ndarray, result: StageResult) -> None:
        stride = GEOMETRY[self.config.audio_variant].new_frames
        n_frames = clip.n_frames or frames_for_samples(len(audio))
        feats = streaming_features(self.encoder, audio, n_frames, stride=stride).astype(np.float16)
        result.outputs["audio.npy"] = npy_bytes(feats)
        result.metrics.update(audio_encoder=self.encoder.name, audio_frames=int(feats.shape[0]),
                              audio_layers=int(feats.shape[1]), audio_dim=int(feats.shape[2]), audio_stride=stride)

    def _mask_and_faces(self, clip: Clip, given: dict[str, str], result: StageResult) -> None:
        """One pass over a few frames: the first frame's mask, and gender/age on evenly spaced frames."""
        want_mask = self.config.mask and "mask.png" not in clip.outputs
        want_face = self.genderage is not None and not {"gender", "age"} <= set(given)
        if not (want_mask or want_face):
            return
        n = clip.n_frames or 1
        picks = set(np.linspace(0, max(n - 1, 0), self.config.attribute_frames).round().astype(int)) if want_face else set()
        last = max(picks | {0})
        genders, ages = [], []
        with FaceMesh(video=False) as mesh:
            for index, rgb in iter_frames(clip_video(clip)):
                if index > last:
                    break
                need_mesh = (index == 0 and want_mask) or (index in picks and clip.face_track is None)
                found = mesh(rgb) if need_mesh else None
                if index == 0 and want_mask:
                    mask = found.mask(*rgb.shape[:2]) if found is not None else np.zeros(rgb.shape[:2], np.uint8)
                    result.outputs["mask.png"] = png_bytes(mask)
                    result.metrics["mask_ratio"] = round(float((mask > 0).mean()), 4)
                if index in picks:
                    box = self._box(clip, index, found)
                    if box is not None:
                        estimate = self.genderage(rgb, box)
                        genders.append(estimate.gender)
                        ages.append(estimate.age)
        if ages:
            male = genders.count("male") / len(genders)
            result.metrics.update(age_years=round(float(np.median(ages)), 1), male_share=round(male, 3))
            result.attributes["gender"] = Attribute("male" if male >= 0.5 else "female", "model")
            result.attributes["age"] = Attribute(str(int(round(float(np.median(ages))))), "model")

    @staticmethod
    def _box(clip: Clip, index: int, found) -> np.ndarray | None:
        if clip.face_track is not None and index < len(clip.face_track):
            box = np.asarray(clip.face_track[index], dtype=np.float64)
            return None if np.isnan(box).any() else box
        return None if found is None else np.asarray(found.box())

    def _language(self, audio: np.ndarray, given: dict[str, str], result: StageResult) -> None:
        if self.language is None or "language" in given:
            return
        found = self.language(audio[: int(self.config.language_seconds * SAMPLE_RATE)])
        result.metrics["language_prob"] = round(found.probability, 4)
        if found.probability >= self.config.min_language_prob:
            result.attributes["language"] = Attribute(found.language, "model")
