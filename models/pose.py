"""Hand keypoints for the occlusion stage.

- `DWposeHands`: rtmlib wholebody (a YOLOX person detector + a DWpose/RTMW 133-keypoint ONNX), both
  from local paths; hands are keypoints 91-132 of the COCO-WholeBody layout. Input sizes are read
  from the ONNX files, so any exported resolution works.
- `MediapipeHands`: the embedded default, mediapipe hands (ships its model), 21 landmarks per hand.

Both return `Hands`: pixel coordinates [n_points, 2] and a score per point.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vividhead.weights_verify import verify_weights

HAND_KEYPOINTS = slice(91, 133)   # COCO-WholeBody: left hand 91-111, right hand 112-132
WHOLEBODY_KEYPOINTS = 133


@dataclass(frozen=True)
class Hands:
    """All hand points found in one image: [n, 2] pixels and [n] scores in 0..1."""

    points: np.ndarray
    scores: np.ndarray


def _onnx_hw(path: Path, default: tuple[int, int]) -> tuple[int, int]:
    """Input (height, width) of a [1, 3, H, W] ONNX model, `default` when H and W are dynamic."""
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - any load failure is the same user error
        raise ValueError(f"ONNX model {path} is unreadable: {exc}") from exc
    shape = session.get_inputs()[0].shape
    if len(shape) != 4:
        raise ValueError(f"ONNX model {path}: input shape {shape}, expected [1, 3, H, W]")
    if not all(isinstance(v, int) for v in shape[2:]):
        return default
    return int(shape[2]), int(shape[3])


def onnx_device() -> str:
    """'cuda' when onnxruntime can use a GPU here, else 'cpu'."""
    import onnxruntime as ort

    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


class DWposeHands:
    """rtmlib YOLOX + DWpose wholebody from local ONNX files (never downloads: paths must exist)."""

    def __init__(self, det_path: Path, pose_path: Path) -> None:
        from rtmlib import RTMPose, YOLOX

        for label, path in (("dwpose_det (YOLOX)", det_path), ("dwpose_pose (DWpose)", pose_path)):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{label} weights {path} do not exist")
        verify_weights("dwpose_det", Path(det_path))
        verify_weights("dwpose_pose", Path(pose_path))
        # dynamic inputs fall back to DWpose's published sizes: YOLOX-L 640x640, dw-ll_ucoco_384 384x288
        det_hw, pose_hw = _onnx_hw(Path(det_path), (640, 640)), _onnx_hw(Path(pose_path), (384, 288))
        device = onnx_device()
        # rtmlib takes the YOLOX size as (h, w) and the pose size as (w, h).
        self.det = YOLOX(str(det_path), model_input_size=det_hw, backend="onnxruntime", device=device)
        self.pose = RTMPose(str(pose_path), model_input_size=pose_hw[::-1], backend="onnxruntime", device=device)

    def __call__(self, rgb: np.ndarray) -> Hands:
        bgr = np.ascontiguousarray(rgb[..., ::-1])   # rtmlib follows OpenCV: BGR input
        boxes = self.det(bgr)
        if len(boxes) == 0:
            return Hands(np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
        keypoints, scores = self.pose(bgr, bboxes=boxes)   # [people, 133, 2], [people, 133]
        if keypoints.shape[1] != WHOLEBODY_KEYPOINTS:
            raise ValueError(f"pose model returned {keypoints.shape[1]} keypoints, expected 133 (COCO-WholeBody)")
        return Hands(keypoints[:, HAND_KEYPOINTS].reshape(-1, 2).astype(np.float32),
                     scores[:, HAND_KEYPOINTS].reshape(-1).astype(np.float32))


class MediapipeHands:
    """mediapipe hands (the embedded default); every landmark of a detected hand gets the hand's score."""

    def __init__(self, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2,
                                               min_detection_confidence=min_confidence)

    def __call__(self, rgb: np.ndarray) -> Hands:
        found = self._hands.process(np.ascontiguousarray(rgb))
        if not found.multi_hand_landmarks:
            return Hands(np.zeros((0, 2), np.float32), np.zeros(0, np.float32))
        h, w = rgb.shape[:2]
        points, scores = [], []
        for landmarks, handedness in zip(found.multi_hand_landmarks, found.multi_handedness, strict=True):
            score = handedness.classification[0].score
            for p in landmarks.landmark:
                points.append((p.x * w, p.y * h))
                scores.append(score)
        return Hands(np.asarray(points, np.float32), np.asarray(scores, np.float32))

    def close(self) -> None:
        self._hands.close()
