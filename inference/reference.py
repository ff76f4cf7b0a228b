"""The reference image of a stream: load, optional face crop (the build's rule), and colour correction.

The crop is the build's (stage 5): `vividhead.models.face_detect.main_face` and `crop_box`, the same
functions pipelines/extract.py uses, resized to 512x512. Unlike the build there is no resolution floor
(`face.max_upscale`): a reference image is always used, however small its face. Without a face (or with `crop=False`) the
image's centre square is used.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch


def load_rgb(path: Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None else None
    if image is None:
        raise FileNotFoundError(f"reference image {path}: missing or not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def face_crop_box(rgb: np.ndarray, crop_scale: float | None = None) -> tuple[int, int, int] | None:
    """(x, y, side) of the build's face crop, or None when no face is found."""
    from vividhead.config import FaceConfig
    from vividhead.models.face_detect import MediapipeFaceDetector, crop_box, main_face

    face_cfg = FaceConfig()
    crop_scale = face_cfg.crop_scale if crop_scale is None else crop_scale
    detector = MediapipeFaceDetector(face_cfg.model_selection, face_cfg.min_confidence)
    try:
        faces = detector(rgb)
    finally:
        detector.close()
    if not faces:
        return None
    h, w = rgb.shape[:2]
    return crop_box(main_face(faces), w, h, crop_scale)


def prepare_reference(rgb: np.ndarray, size: int = 512, crop: bool = True) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """The square `size` x `size` reference frame and the face box used (None: centre square)."""
    box = face_crop_box(rgb) if crop else None
    h, w = rgb.shape[:2]
    x, y, side = box if box is not None else ((w - min(h, w)) // 2, (h - min(h, w)) // 2, min(h, w))
    square = rgb[y: y + side, x: x + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_CUBIC
    return cv2.resize(square, (size, size), interpolation=interp), box


def to_video_tensor(rgb: np.ndarray, frames: int) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, frames, H, W] in [-1, 1] (the image repeated)."""
    image = torch.from_numpy(rgb).permute(2, 0, 1).float() / 127.5 - 1.0
    return image[None, :, None].expand(1, 3, frames, *image.shape[1:]).contiguous()


def color_correct(video: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Match each channel's mean and std of a decoded chunk [B, 3, T, H, W] to the reference [B, 3, 1, H, W]."""
    dims = (2, 3, 4)
    mean, std = video.mean(dims, keepdim=True), video.std(dims, keepdim=True)
    ref_mean, ref_std = reference.mean(dims, keepdim=True), reference.std(dims, keepdim=True)
    return ((video - mean) / (std + 1e-5) * ref_std + ref_mean).clamp(-1, 1)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> [T, size, size, 3], bilinear."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR) for frame in frames])


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    frames = ((video[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
