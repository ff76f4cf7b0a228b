"""Stages 3-7 on one decode pass of a work unit: segment, normalise, face crop, flow cuts, visibility.

Each 25 fps frame of the unit is looked at once, in order:
- a small copy scores scene cuts (stage 3) and DIS optical flow (stage 6);
- a piece (scene, or given range, split at `segment.max_seconds`) opens a clip on the first frame
  with a face, found on the full frame (stage 5), and fixes the 512 crop centred on that face;
- every frame of an open clip is cropped, resized and fed to its x264 encoder as it goes (stage 4);
- faces are detected inside the crop a few times per second and interpolated in between (the face
  track, in crop pixels); the track follows the speaker and measures how far the face has moved from
  where the clip opened: past `face.max_drift` the clip ends there (`face_moved`) and a new piece
  re-centres (pipelines/framing.py);
- the 1 fps samples among them measure visibility (stage 7), and the full frame is searched for a
  second face of comparable size (one visible speaker).
When the piece ends, the clip is decided. A rejected clip's file is deleted; a kept one gets its
audio, a 16 kHz wav and the first frame's face mask. Every piece becomes one `Clip` record.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from vividhead.config import BuildConfig
from vividhead.media import ClipEncoder, UnitDecoder, png_bytes, write_wav
from vividhead.models.face_detect import Face, FaceDetector, crop_box, main_face
from vividhead.pipelines.framing import comparable_faces, drift, follow
from vividhead.pipelines.motion import MotionScorer
from vividhead.pipelines.records import Attribute, Clip
from vividhead.pipelines.scenes import SceneScorer
from vividhead.pipelines.units import WorkUnit

# Raw metrics of stages 2-7, declared so that every manifest part has the same columns.
EXTRACT_METRICS: dict[str, str] = {
    "probe.duration": "float", "probe.width": "int", "probe.height": "int", "probe.fps": "float",
    "probe.vfr": "bool", "probe.rotation": "int", "probe.video_codec": "str", "probe.pix_fmt": "str",
    "probe.audio_rate": "int", "probe.audio_channels": "int",
    "segment.starts_at_cut": "bool", "segment.end_reason": "str", "segment.piece_start": "float",
    "face.detector": "str", "face.score": "float", "face.side": "float", "face.count": "int",
    "face.upscale": "float", "face.max_drift": "float", "face.moved_at": "float", "face.track_ratio": "float", "face.mask_source": "str",
    "flow.max_residual": "float", "flow.max_residual_at": "float", "flow.mean_motion": "float",
    "flow.max_motion": "float",
    "visibility.face_ratio": "float", "visibility.samples": "int", "visibility.max_faces": "int",
    "visibility.second_face_ratio": "float",
    "extract.node": "str",          # the Ray node that decoded the unit (cluster provenance)
}


def clip_key(md5: str, start: float, end: float, content_hash: str) -> str:
    """The clip key of docs/FORMATS.md: source MD5, time range in ms, content hash; no dots."""
    return f"{md5[:16]}_{round(start * 1000):08d}_{round(end * 1000):08d}_{content_hash[:8]}"


@dataclass
class _Piece:
    """A scene (or given range) being read; it opens a clip once a face is found."""

    start: int
    starts_at_cut: bool
    state: str = "search"                              # search -> open | rejected
    reject: tuple[str, str, str] | None = None
    clip_start: int = -1
    crop: tuple[int, int, int] | None = None           # x, y, side in source pixels
    encoder: ClipEncoder | None = None
    n: int = 0                                         # frames encoded
    first_crop: np.ndarray | None = None
    boxes: dict[int, Face | None] = field(default_factory=dict)   # clip frame -> face in crop pixels
    visible: list[int] = field(default_factory=list)               # faces found at each 1 fps sample
    second: list[bool] = field(default_factory=list)               # a comparable second face in the frame, per sample
    start_face: Face | None = None                                 # the speaker at the clip's first detection
    last_face: Face | None = None                                  # ... at the latest detection that found it
    max_drift: float = 0.0
    moved_at: int | None = None                                    # clip frame where the drift passed face.max_drift
    residuals: list[float] = field(default_factory=list)
    motions: list[float] = field(default_factory=list)
    metrics: dict = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def spend(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds


class UnitExtractor:
    """Runs stages 3-7 over one work unit and returns one Clip per piece."""

    def __init__(self, unit: WorkUnit, config: BuildConfig, staging: Path, detector: FaceDetector) -> None:
        self.unit, self.config, self.staging, self.detector = unit, config, Path(staging), detector
        self.fps = config.normalize.fps
        self.content_hash = config.content_hash()
        self.detect_every = max(1, round(self.fps / config.face.detect_fps))
        self.visible_every = max(1, round(self.fps / config.visibility.sample_fps))
        self.search_frames = round(config.face.search_seconds * self.fps)
        self.min_frames = round(config.segment.min_seconds * self.fps)
        self.max_frames = round(config.segment.max_seconds * self.fps)
        self.decoder = UnitDecoder(Path(unit.path), unit.start, unit.end, self.fps, config.normalize.sample_rate,
                                   unit.info)

    # ------------------------------------------------------------------------------------ pass
    def run(self) -> list[Clip]:
        self.staging.mkdir(parents=True, exist_ok=True)
        scenes = SceneScorer(self.config.segment.scene_threshold,
                             max(1, round(self.config.segment.scene_min_seconds * self.fps)))
        motion = MotionScorer()
        clips: list[Clip] = []
        piece: _Piece | None = None
        end = None
        frames = self.decoder.frames()
        while True:
            tick = time.perf_counter()
            item = next(frames, None)
            decode_seconds = time.perf_counter() - tick
            if item is None:
                break
            index, rgb = item
            tick = time.perf_counter()
            small = _resize_width(rgb, self.config.segment.analysis_width)
            cut = scenes.update(small) and not self.unit.given_range
            gray = cv2.cvtColor(_resize_width(small, self.config.flow.width), cv2.COLOR_RGB2GRAY)
            residual, moved = motion.update(gray) if self.config.flow.enabled else (0.0, 0.0)
            analysis_seconds = time.perf_counter() - tick
            if piece is None:
                piece = _Piece(index, starts_at_cut=False)
            elif ended := self._ends(piece, cut):
                clips.append(self._finish(piece, index, ended))
                piece = _Piece(index, starts_at_cut=cut)
            elif piece.state == "rejected" and piece.reject[1] == "no_face" and (index - piece.start) % self.visible_every == 0:
                if self._faces(rgb, piece):      # a face appeared without a cut: it starts a new piece
                    clips.append(self._finish(piece, index, "face_appeared"))
                    piece = _Piece(index, starts_at_cut=False)
            piece.spend("decode", decode_seconds)
            piece.spend("analysis", analysis_seconds)
            self._feed(piece, index, rgb, residual, moved)
            end = index + 1
        if piece is not None:
            clips.append(self._finish(piece, end, "end"))
        return clips

    def _ends(self, piece: _Piece, cut: bool) -> str | None:
        """Why the piece ends before this frame: a scene cut, the length limit, or its face leaving the crop."""
        if cut:
            return "cut"
        if piece.state != "open":
            return None
        if piece.n >= self.max_frames:
            return "max_length"
        return "face_moved" if piece.moved_at is not None else None

    def _faces(self, rgb: np.ndarray, piece: _Piece) -> list[Face]:
        tick = time.perf_counter()
        faces = self.detector(rgb)
        piece.spend("face", time.perf_counter() - tick)
        return faces

    def _feed(self, piece: _Piece, index: int, rgb: np.ndarray, residual: float, moved: float) -> None:
        face_cfg = self.config.face
        offset = index - piece.start
        if piece.state == "search" and offset % self.detect_every == 0:
            if offset > self.search_frames:
                piece.state = "rejected"
                piece.reject = ("face", "no_face", f"no face within {face_cfg.search_seconds} s of the piece start")
            elif faces := self._faces(rgb, piece):
                self._open(piece, index, rgb, faces)
        if piece.state != "open":
            return
        tick = time.perf_counter()
        x, y, side = piece.crop
        crop = cv2.resize(rgb[y : y + side, x : x + side], (face_cfg.size, face_cfg.size),
                          interpolation=cv2.INTER_AREA if side > 2 * face_cfg.size else cv2.INTER_LINEAR)
        piece.encoder.add(crop)
        piece.spend("encode", time.perf_counter() - tick)
        k = index - piece.clip_start
        if k == 0:
            piece.first_crop = crop
        else:
            piece.residuals.append(residual)
            piece.motions.append(moved)
        if k % self.detect_every == 0 or k % self.visible_every == 0:
            faces = self._faces(crop, piece)
            piece.boxes[k] = self._follow(piece, k, faces)
            if k % self.visible_every == 0:
                piece.visible.append(len(faces))
                others = comparable_faces(self._faces(rgb, piece), piece.crop, self.config.visibility.second_face_min_share)
                piece.second.append(others > 0)
        piece.n += 1

    def _follow(self, piece: _Piece, k: int, faces: list[Face]) -> Face | None:
        """The speaker among the crop's faces; measures its drift from the clip's first detection."""
        face = follow(faces, piece.last_face, self.config.face.size)
        if face is not None and piece.moved_at is None:
            piece.start_face, piece.last_face = piece.start_face or face, face
            moved = drift(face, piece.start_face, self.config.face.size)
            if moved > self.config.face.max_drift:
                piece.moved_at = k
            else:
                piece.max_drift = max(piece.max_drift, moved)
        return face

    def _open(self, piece: _Piece, index: int, rgb: np.ndarray, faces: list[Face]) -> None:
        cfg = self.config
        main = main_face(faces)
        h, w = rgb.shape[:2]
        x, y, side = crop_box(main, w, h, cfg.face.crop_scale)
        upscale = cfg.face.size / max(side, 1)
        piece.metrics.update({"face.detector": self.detector.name, "face.score": main.score, "face.side": main.side,
                              "face.count": len(faces), "face.upscale": upscale})
        piece.crop = (x, y, side)
        if upscale > cfg.face.max_upscale:
            piece.state = "rejected"
            piece.reject = ("face", "resolution_too_low",
                            f"the crop around the face is {side} px; {cfg.face.size} px needs an upscale of "
                            f"{upscale:.2f} > face.max_upscale {cfg.face.max_upscale}")
            return
        piece.state, piece.clip_start = "open", index
        enc = cfg.encode
        piece.encoder = ClipEncoder(self.staging / f"piece_{index:09d}.mp4", cfg.face.size, self.fps,
                                    cfg.normalize.sample_rate, enc.codec, enc.preset, enc.crf, enc.audio_bitrate,
                                    enc.threads)

    # ---------------------------------------------------------------------------------- decide
    def _finish(self, piece: _Piece, end: int, end_reason: str) -> Clip:
        unit, fps = self.unit, self.fps
        opened = piece.state == "open"
        first = piece.clip_start if opened else piece.start
        start_t, end_t = first / fps, end / fps
        key = clip_key(unit.source.md5, start_t, end_t, self.content_hash)
        clip = Clip(key=key, source=unit.source, start=start_t, end=end_t, crop_box=piece.crop, n_frames=end - first,
                    attributes={name: Attribute(value, "given") for name, value in unit.source.attributes})
        clip.metrics.update(self._probe_metrics())
        clip.metrics.update(piece.metrics)
        clip.metrics.update({"segment.starts_at_cut": piece.starts_at_cut, "segment.end_reason": end_reason,
                             "segment.piece_start": piece.start / fps})
        reject = None
        if end - first < self.min_frames:
            reject = ("segment", "too_short",
                      f"{(end - first) / fps:.2f} s is shorter than segment.min_seconds {self.config.segment.min_seconds} s")
        elif not opened:
            reject = piece.reject or ("face", "no_face", "no face found in the piece")
        if opened:
            track = self._track(piece)
            clip.face_track = track
            clip.metrics.update(self._clip_metrics(piece, track))
            reject = reject or decide_core(clip.metrics, self.config)
        clip.timings = dict(piece.timings)
        if reject is not None:
            clip.status = "rejected"
            clip.reject_stage, clip.reject_reason, clip.reject_detail = reject
            if piece.encoder is not None:
                piece.encoder.abort()
        else:
            self._write(piece, clip)
        self.decoder.release_audio_before(end_t)
        return clip

    def _track(self, piece: _Piece) -> np.ndarray:
        """[n, 4] face boxes in crop pixels: detections at keyframes, linear in between, NaN when unknown."""
        track = np.full((piece.n, 4), np.nan, np.float32)
        keys = sorted(piece.boxes)
        for a, b in zip(keys, keys[1:] + [piece.n]):
            box_a = piece.boxes[a]
            if box_a is None:
                continue
            box_b = piece.boxes.get(b)
            va = np.array([box_a.x0, box_a.y0, box_a.x1, box_a.y1], np.float32)
            vb = va if box_b is None and b == piece.n else (
                np.array([box_b.x0, box_b.y0, box_b.x1, box_b.y1], np.float32) if box_b is not None else None)
            for i in range(a, min(b, piece.n)):
                if vb is None:
                    if i - a < (b - a) / 2:
                        track[i] = va
                else:
                    track[i] = va + (vb - va) * ((i - a) / max(b - a, 1))
        return track

    def _clip_metrics(self, piece: _Piece, track: np.ndarray) -> dict:
        residuals = np.asarray(piece.residuals) if piece.residuals else np.zeros(1)
        motions = np.asarray(piece.motions) if piece.motions else np.zeros(1)
        samples = np.asarray(piece.visible) if piece.visible else np.zeros(0, int)
        return {
            "face.max_drift": piece.max_drift if piece.start_face is not None else None,
            "face.moved_at": piece.moved_at / self.fps if piece.moved_at is not None else None,
            "face.track_ratio": float(np.isfinite(track[:, 0]).mean()) if len(track) else 0.0,
            "flow.max_residual": float(residuals.max()),
            "flow.max_residual_at": float((int(residuals.argmax()) + 1) / self.fps),
            "flow.mean_motion": float(motions.mean()),
            "flow.max_motion": float(motions.max()),
            "visibility.face_ratio": float((samples > 0).mean()) if samples.size else 0.0,
            "visibility.samples": int(samples.size),
            "visibility.max_faces": int(samples.max()) if samples.size else 0,
            "visibility.second_face_ratio": float(np.mean(piece.second)) if piece.second else None,
        }

    def _probe_metrics(self) -> dict:
        info = self.unit.info
        return {"probe.duration": info.duration, "probe.width": info.width, "probe.height": info.height,
                "probe.fps": info.fps, "probe.vfr": info.vfr, "probe.rotation": info.rotation,
                "probe.video_codec": info.video_codec, "probe.pix_fmt": info.pix_fmt,
                "probe.audio_rate": info.audio_rate, "probe.audio_channels": info.audio_channels}

    def _write(self, piece: _Piece, clip: Clip) -> None:
        """Finish the kept clip's files: mp4 with audio, wav, face mask, face track."""
        tick = time.perf_counter()
        rate = self.config.normalize.sample_rate
        audio = self.decoder.audio(clip.start, clip.start + piece.n / self.fps)
        piece.encoder.close(audio)
        video = self.staging / f"{clip.key}.mp4"
        piece.encoder.path.replace(video)
        wav = self.staging / f"{clip.key}.wav"
        write_wav(wav, audio, rate)
        clip.video_path, clip.wav_path = str(video), str(wav)
        mask, source = _face_mask(piece.first_crop, piece.boxes.get(0))
        clip.metrics["face.mask_source"] = source
        clip.outputs["mask.png"] = png_bytes(mask)
        clip.timings["encode"] = clip.timings.get("encode", 0.0) + time.perf_counter() - tick


CORE_DECISIONS = {"resolution_too_low", "abrupt_transition", "face_missing", "second_face"}


def decide_core(metrics: dict, config: BuildConfig) -> tuple[str, str, str] | None:
    """The first rejection among the thresholds of stages 5-7, from a clip's raw metrics alone.

    Used when a clip is cut, and again on resume when only these thresholds changed.
    """
    upscale = metrics.get("face.upscale")
    if upscale is not None and upscale > config.face.max_upscale:
        return ("face", "resolution_too_low",
                f"{config.face.size} px needs an upscale of {upscale:.2f} > face.max_upscale {config.face.max_upscale}")
    residual = metrics.get("flow.max_residual")
    if config.flow.enabled and residual is not None and residual > config.flow.max_residual:
        return ("flow", "abrupt_transition",
                f"flow residual {residual:.3f} at {metrics.get('flow.max_residual_at') or 0:.2f} s exceeds "
                f"flow.max_residual {config.flow.max_residual}")
    ratio = metrics.get("visibility.face_ratio")
    if config.visibility.enabled and ratio is not None and 1.0 - ratio > config.visibility.max_missing_ratio:
        return ("visibility", "face_missing",
                f"{1.0 - ratio:.0%} of the 1 fps samples have no face (> visibility.max_missing_ratio "
                f"{config.visibility.max_missing_ratio})")
    second = metrics.get("visibility.second_face_ratio")
    if config.visibility.enabled and second is not None and second > config.visibility.max_second_face_ratio:
        return ("visibility", "second_face",
                f"a second face at least {config.visibility.second_face_min_share:.0%} of the speaker's size is on "
                f"screen in {second:.0%} of the 1 fps samples (> visibility.max_second_face_ratio "
                f"{config.visibility.max_second_face_ratio})")
    return None


def _resize_width(rgb: np.ndarray, width: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    if w <= width:
        return rgb
    return cv2.resize(rgb, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_LINEAR)


def _face_mask(rgb: np.ndarray, box: Face | None) -> tuple[np.ndarray, str]:
    """The face-mesh hull of the first frame; an ellipse in the detection box when the mesh finds none."""
    try:
        from vividhead.models.face_mesh import face_mask
    except ImportError:
        face_mask = None
    if face_mask is not None:
        mask = face_mask(rgb)
        if mask.any():
            return mask, "face_mesh"
    mask = np.zeros(rgb.shape[:2], np.uint8)
    if box is not None:
        center = (round((box.x0 + box.x1) / 2), round((box.y0 + box.y1) / 2))
        axes = (max(1, round((box.x1 - box.x0) / 2)), max(1, round((box.y1 - box.y0) / 2)))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 255, -1)
    return mask, "detection_box"
