"""Face detection: mediapipe 0.10.21 face detection (embedded default) or insightface SCRFD (local ONNX).

Both return `Face` boxes in the pixel coordinates of the image they were given. SCRFD runs through
onnxruntime on the file named by the weights config; its decoding follows the published SCRFD
output layout (per stride: scores, distance boxes, optionally 5 keypoints; two anchors per cell).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from vividhead.weights_verify import verify_weights


@dataclass(frozen=True)
class Face:
    """One detected face: box corners in pixels and the detector's score."""

    x0: float
    y0: float
    x1: float
    y1: float
    score: float

    @property
    def side(self) -> float:
        return max(self.x1 - self.x0, self.y1 - self.y0)

    @property
    def center(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def scaled(self, factor: float, dx: float = 0.0, dy: float = 0.0) -> "Face":
        return Face(self.x0 * factor + dx, self.y0 * factor + dy, self.x1 * factor + dx, self.y1 * factor + dy, self.score)


def main_face(faces: list[Face]) -> Face:
    """The face a crop is centred on: the largest by side x score."""
    return max(faces, key=lambda f: f.side * f.score)


def crop_box(face: Face, frame_w: int, frame_h: int, crop_scale: float) -> tuple[int, int, int]:
    """(x, y, side) of the square face crop: `crop_scale` x the face box's larger side, clamped to the frame
    (never larger than its shorter side), centred on the face and shifted inside the frame.

    Shared by `vividhead build` stage 5 (pipelines/extract.py) and the stream's reference image
    (inference/reference.py). The resolution floor (`face.size / side` against `face.max_upscale`) is the
    build's rejection rule and stays there: a reference image is always used, however small its face.
    """
    side = int(min(round(face.side * crop_scale), frame_w, frame_h))
    cx, cy = face.center
    x = int(np.clip(round(cx - side / 2), 0, frame_w - side))
    y = int(np.clip(round(cy - side / 2), 0, frame_h - side))
    return x, y, side


class FaceDetector(Protocol):
    name: str

    def __call__(self, rgb: np.ndarray) -> list[Face]: ...

    def close(self) -> None: ...


def _downscale(rgb: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    """The image shrunk so its larger side is at most max_side, and the factor back to the original."""
    h, w = rgb.shape[:2]
    scale = max(h, w) / max_side
    if scale <= 1:
        return rgb, 1.0
    small = cv2.resize(rgb, (round(w / scale), round(h / scale)), interpolation=cv2.INTER_AREA)
    return small, w / small.shape[1]


class MediapipeFaceDetector:
    """mediapipe's BlazeFace (the model ships in the 0.10.21 wheel).

    Images are shrunk to `max_side` first: the model itself sees 128 px (short range) or 192 px
    (full range), so larger inputs only cost conversion time.
    """

    name = "mediapipe"

    def __init__(self, model_selection: int = 1, min_confidence: float = 0.5, max_side: int = 320) -> None:
        import mediapipe as mp

        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence
        )
        self.max_side = max_side

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        small, back = _downscale(rgb, self.max_side)
        h, w = small.shape[:2]
        result = self._detector.process(np.ascontiguousarray(small))
        faces = []
        for detection in result.detections or []:
            box = detection.location_data.relative_bounding_box
            x0, y0 = box.xmin * w, box.ymin * h
            faces.append(Face(x0, y0, x0 + box.width * w, y0 + box.height * h, float(detection.score[0])).scaled(back))
        return faces

    def close(self) -> None:
        self._detector.close()


class ScrfdFaceDetector:
    """insightface SCRFD from a local ONNX file (e.g. scrfd_10g_bnkps.onnx) through onnxruntime."""

    name = "scrfd"
    strides = (8, 16, 32)

    def __init__(self, path: Path, min_confidence: float = 0.5, input_size: int = 640, nms: float = 0.4) -> None:
        import onnxruntime

        self.session = onnxruntime.InferenceSession(str(path), providers=_providers(onnxruntime))
        verify_weights("scrfd", Path(path), session=self.session)   # lock record or pin; input name, outputs
        self.input_name = self.session.get_inputs()[0].name
        self.min_confidence, self.input_size, self.nms = min_confidence, input_size, nms

    def __call__(self, rgb: np.ndarray) -> list[Face]:
        size = self.input_size
        h, w = rgb.shape[:2]
        scale = size / max(h, w)
        resized = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))))
        canvas = np.zeros((size, size, 3), np.float32)
        canvas[: resized.shape[0], : resized.shape[1]] = resized
        blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
        outputs = self.session.run(None, {self.input_name: blob.astype(np.float32)})
        boxes, scores = [], []
        for i, stride in enumerate(self.strides):
            score = outputs[i].reshape(-1)
            dist = outputs[i + len(self.strides)].reshape(-1, 4) * stride
            cells = size // stride
            ys, xs = np.mgrid[:cells, :cells]
            centers = np.stack([xs, ys], -1).reshape(-1, 2).astype(np.float32) * stride
            anchors = score.size // centers.shape[0]
            centers = np.repeat(centers, anchors, axis=0)
            keep = score >= self.min_confidence
            c, d = centers[keep], dist[keep]
            boxes.append(np.concatenate([c - d[:, :2], c + d[:, 2:]], axis=1))
            scores.append(score[keep])
        box, score = np.concatenate(boxes) / scale, np.concatenate(scores)
        keep = _nms(box, score, self.nms)
        return [Face(*map(float, box[i]), float(score[i])) for i in keep]

    def close(self) -> None:
        self.session = None


def _providers(onnxruntime) -> list[str]:
    available = onnxruntime.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def _nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    order, keep = list(np.argsort(-scores)), []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.asarray(order, dtype=int)
        if rest.size == 0:
            break
        xx0 = np.maximum(boxes[i, 0], boxes[rest, 0])
        yy0 = np.maximum(boxes[i, 1], boxes[rest, 1])
        xx1 = np.minimum(boxes[i, 2], boxes[rest, 2])
        yy1 = np.minimum(boxes[i, 3], boxes[rest, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        iou = inter / (area[i] + area[rest] - inter + 1e-9)
        order = [int(j) for j, o in zip(rest, iou) if o <= threshold]
    return keep


def make_face_detector(detector: str, weights_path: Path | None, model_selection: int = 1,
                       min_confidence: float = 0.5) -> FaceDetector:
    """SCRFD when asked for (or `auto` with its weights present), else mediapipe."""
    if detector == "scrfd" and weights_path is None:
        raise FileNotFoundError("face.detector is 'scrfd' but weights 'scrfd' is not configured or missing")
    if detector in ("scrfd", "auto") and weights_path is not None:
        return ScrfdFaceDetector(weights_path, min_confidence)
    return MediapipeFaceDetector(model_selection, min_confidence)
