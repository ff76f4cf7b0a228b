"""Stages 3-7 on one decode pass of a work unit: segment, normalise, face crop, flow, visibility.

One loop reads each 25 fps frame of the unit once, in order (`UnitDecoder`):
- stage 3: `SceneCuts` (PySceneDetect) sees a small copy of every frame and says where scenes cut;
  a piece (scene, or given range, split at `segment.max_seconds`) follows;
- stage 5: a piece opens a clip on its first frame with a face, found on the full frame, and fixes
  the square crop centred on that face;
- stage 4: every frame of an open clip is cropped, resized and fed to its x264 encoder as it goes;
- stages 5-7: the clip's observers (`FaceTrack`, `FlowObserver`, `Visibility`) see each of its
  frames; the crop's faces are detected once per frame, whichever observer asks. A clip also ends
  where its face has drifted `face.max_drift` from its start (`face_moved`): a new piece re-centres.
When the piece ends, each observer gives its `StageResult` and the stages decide in table order
(the first rejection wins). A rejected clip's file is deleted; a kept one gets its audio, a 16 kHz
wav and the first frame's face mask. Every piece becomes one `Clip` record.

Clips stream out: `extract_rows` is a generator that yields each clip's row as soon as its piece
ends, the decode dataset made by `unit_dataset` hands each row on as its own Ray Data block, and
`rows_as_made` reads them on the driver without looking ahead, so the driver can commit a clip while
the rest of its unit is still being decoded. A unit with `resume_at` (pipelines/units.py) restarts
there: the frames just before it go to the scene detector only (`scenes.warm_up_from`), the audio is
decoded from the unit start, and the pass makes the same pieces, keys, decisions and files from
there on as an unbroken pass would.
"""

from __future__ import annotations

import dataclasses
import pickle
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import ray
from ray.data import DataContext, Dataset

from vividhead.envfail import ENVIRONMENT_REASON, environment_message
from vividhead.media import ClipEncoder, MediaError, UnitDecoder, frame_at, png_bytes, write_wav
from vividhead.models.face_detect import Face, FaceDetector, crop_box, main_face, make_face_detector
from vividhead.models.face_mesh import face_mask
from vividhead.pipelines import face_track, framing, scenes
from vividhead.pipelines.bucket_sources import local_copy
from vividhead.pipelines.config import BuildConfig, resolve_weights
from vividhead.pipelines.face_track import FaceTrack
from vividhead.pipelines.motion import FlowObserver, resize_width
from vividhead.pipelines.records import Attribute, Clip, Frame, Observer, StageResult
from vividhead.pipelines.scenes import SceneCuts
from vividhead.pipelines.units import WorkUnit, probe_metrics
from vividhead.pipelines.visibility import Visibility
from vividhead.storage import is_object_url


# The byte size past which Ray Data closes an output block: one byte makes every row its own block.
ROW_PER_BLOCK = 1


def unit_dataset(units: list[WorkUnit]) -> Dataset:
    """The Ray Data dataset of work units for `extract_rows`, one unit per block, that streams its rows.

    Ray Data gathers a task's output rows into a block until the block passes
    `DataContext.target_max_block_size` (128 MiB by default), so a unit's clips would only leave
    their task together. A dataset keeps the `DataContext` that was current when it was created
    (documented at `DataContext.get_current`), and the steps chained onto it share it; so it is
    created under `ROW_PER_BLOCK`, and each clip row reaches the next stage and the driver on its own
    (read it with `rows_as_made`).
    """
    with _current_block_size(ROW_PER_BLOCK):
        return ray.data.from_items([{"unit": pickle.dumps(unit)} for unit in units],
                                   override_num_blocks=max(1, len(units)))


def rows_as_made(ds: Dataset) -> Iterator[dict[str, Any]]:
    """The rows of `ds` on the driver, each as soon as its block arrives.

    `Dataset.iter_rows` fetches one block ahead, so it would hold a clip back until its unit's next
    clip is made; `iter_batches` without prefetching hands on each block at once.
    """
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        yield from batch.to_pylist()


@contextmanager
def _current_block_size(size: int) -> Iterator[None]:
    context = DataContext.get_current()
    before = context.target_max_block_size
    context.target_max_block_size = size
    try:
        yield
    finally:
        context.target_max_block_size = before


def extract_rows(row: dict[str, Any], config: BuildConfig, staging: str,
                 downloads: str | None = None) -> Iterator[dict[str, Any]]:
    """Stages 3-7 of one unit (a Ray task): each clip's row as soon as its piece ends.

    A row is {"unit": unit id, "clip": pickled Clip, "pieces": n}: n is 0 except on the unit's last
    row, where it counts the rows this task yielded for the unit, so the driver knows the unit is
    whole once it holds that many. An error ends the unit with one failed row over the part not yet
    made (its n counts the rows before it too). A unit of a source in a bucket reads the object's
    local copy in `downloads`, made on this node if no task here made it before.
    """
    unit: WorkUnit = pickle.loads(row["unit"])
    node = ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    sent, made_to = 0, unit.start if unit.resume_at is None else unit.resume_at
    try:
        if is_object_url(unit.path):
            unit = dataclasses.replace(unit, path=str(local_copy(unit.path, Path(downloads or staging), config.storage)))
        scrfd = resolve_weights(config).available("scrfd")
        detector = make_face_detector(config.face.detector, scrfd, config.face.model_selection,
                                      config.face.min_confidence)
        try:
            for clip in UnitExtractor(unit, config, Path(staging) / unit.unit_id, detector).run():
                clip.metrics["extract.node"] = node
                sent += 1
                last = clip.metrics["segment.end_reason"] == "end"
                yield {"unit": unit.unit_id, "clip": pickle.dumps(clip), "pieces": sent if last else 0}
                made_to = clip.end
        finally:
            detector.close()
    except Exception as err:  # noqa: BLE001 - recorded as a failed unit, the build goes on ...
        env = environment_message(err)                   # ... unless the disk or the cluster failed: the driver stops
        reason = ENVIRONMENT_REASON if env else err.reason if isinstance(err, MediaError) else "error"
        clip = Clip(key=f"{unit.unit_id}_failed", source=unit.source, start=made_to, end=unit.end,
                    status="failed", reject_stage="extract", reject_reason=reason,
                    reject_detail=env or f"{type(err).__name__}: {err} | {traceback.format_exc(limit=4)[-800:]}")
        clip.metrics["extract.node"] = node
        yield {"unit": unit.unit_id, "clip": pickle.dumps(clip), "pieces": sent + 1}


def clip_key(md5: str, start: float, end: float, content_hash: str) -> str:
    """The clip key of docs/FORMATS.md: source MD5, time range in ms, content hash; no dots."""
    return f"{md5[:16]}_{round(start * 1000):08d}_{round(end * 1000):08d}_{content_hash[:8]}"


@dataclass
class _Piece:
    """A scene (or given range) being read; it opens a clip once a face is found."""

    start: int
    starts_at_cut: bool
    state: str = "search"                              # search -> open | rejected
    reject: tuple[str, str, str] | None = None         # (stage, reason, detail) of a piece that opens no clip
    clip_start: int = -1
    crop: tuple[int, int, int] | None = None           # x, y, side in source pixels
    opened: dict[str, Any] = field(default_factory=dict)       # face metrics of the first detection
    observers: dict[str, Observer] = field(default_factory=dict)   # stage -> its observer of the open clip
    encoder: ClipEncoder | None = None
    n: int = 0                                         # frames encoded
    first_crop: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    listed_missed: bool = False                        # faces were found, but none in the list's face box

    def spend(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds


class UnitExtractor:
    """Runs stages 3-7 over one work unit (from its `resume_at`, when set) and yields one Clip per piece."""

    def __init__(self, unit: WorkUnit, config: BuildConfig, staging: Path, detector: FaceDetector) -> None:
        self.unit, self.config, self.staging, self.detector = unit, config, Path(staging), detector
        self.fps = config.normalize.fps
        self.content_hash = config.content_hash()
        self.detect_every = max(1, round(self.fps / config.face.detect_fps))
        self.visible_every = max(1, round(self.fps / config.visibility.sample_fps))
        self.search_frames = round(config.face.search_seconds * self.fps)
        self.max_frames = round(config.segment.max_seconds * self.fps)
        first = frame_at(unit.start, self.fps)
        self.resume = first if unit.resume_at is None else round(unit.resume_at * self.fps)
        last_cut = None if unit.resume_last_cut is None else round(unit.resume_last_cut * self.fps)
        warm = scenes.warm_up_from(self.resume, last_cut, first, scenes.memory_frames(config.segment, self.fps))
        self.decoder = UnitDecoder(Path(unit.path), warm / self.fps if warm > first else unit.start, unit.end,
                                   self.fps, config.normalize.sample_rate, unit.info, audio_from=unit.start)

    # ------------------------------------------------------------------------------------ pass
    def run(self) -> Iterator[Clip]:
        """Each piece's Clip as soon as the piece ends; frames before `resume` only warm up the scene detector."""
        self.staging.mkdir(parents=True, exist_ok=True)
        cuts = SceneCuts(self.config.segment, self.fps)
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
            frame = Frame(index, rgb, resize_width(rgb, self.config.segment.analysis_width), detect=self.detector)
            cut = cuts.update(frame) and not self.unit.given_range
            segment_seconds = time.perf_counter() - tick
            if index < self.resume:
                continue
            if piece is None:                    # the unit start, or where the committed pieces end
                piece = _Piece(index, starts_at_cut=self.unit.resume_starts_at_cut)
            elif ended := self._ends(piece, cut):
                yield self._finish(piece, index, ended)
                piece = _Piece(index, starts_at_cut=cut)
            elif piece.state == "rejected" and piece.reject[1] == "no_face" and (index - piece.start) % self.visible_every == 0:
                if self._faces(rgb, piece):      # a face appeared without a cut: it starts a new piece
                    yield self._finish(piece, index, "face_appeared")
                    piece = _Piece(index, starts_at_cut=False)
            piece.spend("decode", decode_seconds)
            piece.spend("segment", segment_seconds)
            self._feed(piece, frame)
            end = index + 1
        if piece is not None:
            yield self._finish(piece, end, "end")

    def _ends(self, piece: _Piece, cut: bool) -> str | None:
        """Why the piece ends before this frame: a scene cut, the length limit, or its face leaving the crop."""
        if cut:
            return "cut"
        if piece.state != "open":
            return None
        if piece.n >= self.max_frames:
            return "max_length"
        return "face_moved" if piece.observers["face"].moved else None

    def _faces(self, rgb: np.ndarray, piece: _Piece) -> list[Face]:
        """Faces on the full frame (a piece looking for its first face)."""
        tick = time.perf_counter()
        faces = self.detector(rgb)
        piece.spend("face", time.perf_counter() - tick)
        return faces

    def _feed(self, piece: _Piece, frame: Frame) -> None:
        offset = frame.index - piece.start
        if piece.state == "search" and offset % self.detect_every == 0:
            if offset > self.search_frames:
                piece.state = "rejected"
                piece.reject = self._not_found(piece)
            elif faces := self._faces(frame.rgb, piece):
                listed = faces if self.unit.box is None else framing.listed_faces(faces, self.unit.box, frame.rgb)
                piece.listed_missed = piece.listed_missed or not listed
                if listed:
                    self._open(piece, frame, listed)
        if piece.state != "open":
            return
        tick = time.perf_counter()
        size = self.config.face.size
        x, y, side = piece.crop
        frame.crop = cv2.resize(frame.rgb[y : y + side, x : x + side], (size, size),
                                interpolation=cv2.INTER_AREA if side > 2 * size else cv2.INTER_LINEAR)
        frame.clip_index = frame.index - piece.clip_start
        piece.encoder.add(frame.crop)
        piece.spend("encode", time.perf_counter() - tick)
        if frame.clip_index == 0:
            piece.first_crop = frame.crop
        for stage, observer in piece.observers.items():
            tick = time.perf_counter()
            observer.update(frame)
            piece.spend(stage, time.perf_counter() - tick)
        piece.n += 1

    def _not_found(self, piece: _Piece) -> tuple[str, str, str]:
        seconds = self.config.face.search_seconds
        if piece.listed_missed:
            return ("face", "listed_face_not_found",
                    f"faces were found, but none inside the list's face box within {seconds} s of the piece start")
        return ("face", "no_face", f"no face within {seconds} s of the piece start")

    def _open(self, piece: _Piece, frame: Frame, faces: list[Face]) -> None:
        cfg = self.config
        main = main_face(faces)
        h, w = frame.rgb.shape[:2]
        x, y, side = crop_box(main, w, h, cfg.face.crop_scale)
        piece.crop = (x, y, side)
        piece.opened = {"detector": self.detector.name, "score": main.score, "side": main.side,
                        "count": len(faces), "upscale": cfg.face.size / max(side, 1)}
        too_low = face_track.decide({"upscale": piece.opened["upscale"]}, cfg.face)
        if too_low is not None:
            piece.state, piece.reject = "rejected", ("face", *too_low)
            return
        piece.state, piece.clip_start = "open", frame.index
        piece.observers = {"face": FaceTrack(cfg.face, self.fps, piece.opened),
                           **({"flow": FlowObserver(cfg.flow, self.fps)} if cfg.flow.enabled else {}),
                           "visibility": Visibility(cfg.visibility, self.fps, piece.crop)}
        enc = cfg.encode
        piece.encoder = ClipEncoder(self.staging / f"piece_{frame.index:09d}.mp4", cfg.face.size, self.fps,
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
                    attributes={name: Attribute(value, "given") for name, value in unit.source.attributes},
                    metrics=probe_metrics(unit.info), timings={"decode": piece.timings.get("decode", 0.0)})
        segment = {"starts_at_cut": piece.starts_at_cut, "end_reason": end_reason,
                   "piece_start": piece.start / fps, "seconds": (end - first) / fps}
        results = {"segment": StageResult(segment, *(scenes.decide(segment, self.config.segment) or (None, None)))}
        if opened:
            results.update({stage: observer.finish() for stage, observer in piece.observers.items()})
            clip.face_track = piece.observers["face"].track()
        else:
            _, reason, detail = piece.reject or ("face", "no_face", "no face found in the piece")
            results["face"] = StageResult(piece.opened, reason, detail)
        for stage, result in results.items():          # table order: segment, face, flow, visibility
            result.seconds = piece.timings.get(stage, 0.0)
            clip.apply(stage, result)
        clip.timings["encode"] = piece.timings.get("encode", 0.0)
        if clip.status != "kept":
            if piece.encoder is not None:
                piece.encoder.abort()
        else:
            self._write(piece, clip)
        self.decoder.release_audio_before(end_t)
        return clip

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
        mask, source = _face_mask(piece.first_crop, piece.observers["face"].boxes.get(0))
        clip.metrics["face.mask_source"] = source
        clip.outputs["mask.png"] = png_bytes(mask)
        clip.timings["encode"] = clip.timings.get("encode", 0.0) + time.perf_counter() - tick


def _face_mask(rgb: np.ndarray, box: Face | None) -> tuple[np.ndarray, str]:
    """The face-mesh hull of the first frame; an ellipse in the detection box when the mesh finds none."""
    mask = face_mask(rgb)
    if mask.any():
        return mask, "face_mesh"
    mask = np.zeros(rgb.shape[:2], np.uint8)
    if box is not None:
        center = (round((box.x0 + box.x1) / 2), round((box.y0 + box.y1) / 2))
        axes = (max(1, round((box.x1 - box.x0) / 2)), max(1, round((box.y1 - box.y0) / 2)))
        cv2.ellipse(mask, center, axes, 0, 0, 360, 255, -1)
    return mask, "detection_box"

