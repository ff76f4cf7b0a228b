"""The reference image of a stream and the pixel steps around the VAE, as the authors' code does them.

- Loading (`load_rgb`): the image's size is read from its header first (Pillow, nothing decoded) and an image
  over the pixel limit is refused; then OpenCV decodes it (EXIF orientation applied).

- Preprocessing (`prepare_reference`): the short side is resized to 512 with bilinear filtering (PIL,
  the scaled size rounded up), then the image is centre-cropped to 512 x 512. No face crop by default;
  `face_crop=True` (the named option `--face-crop`) first crops the build's face square
  (`vividhead.models.face_detect.main_face` / `crop_box`, as pipelines/extract.py does). Without a face
  the whole image is used.
- Pixels: uint8 -> (x / 255 - 0.5) * 2 in the codec's dtype.
- Colour correction (`color_correct`): each frame's Lab mean and standard deviation are matched to the
  reference's, then blended with the original at `strength` (1.0 by default).
- Frames to uint8 (`to_uint8_frames`): ((x + 1) / 2).clip(0, 1) * 255, truncated (not rounded).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from vividhead.envfail import InputError


def declared_size(path: Path) -> tuple[int, int]:
    """(width, height) from an image file's header, nothing decoded; InputError when it is not an image,
    or declares more pixels than Pillow opens at all (its decompression-bomb limit)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)   # the caller applies its own limit
        try:
            with Image.open(path) as image:
                return image.size
        except Image.DecompressionBombError:
            raise InputError(f"reference image {path}: declares more than {2 * Image.MAX_IMAGE_PIXELS:,} pixels, "
                             "far over the limit (--max-image-pixels)") from None
        except (Image.UnidentifiedImageError, OSError, SyntaxError):
            raise InputError(f"reference image {path}: not a readable image") from None


def load_rgb(path: Path, max_pixels: int | None = None) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3]; with `max_pixels`, an image of more pixels (read from its header,
    before decoding) is an InputError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference image {path}: no such file")
    if max_pixels is not None:
        width, height = declared_size(path)
        if width * height > max_pixels:
            raise InputError(f"reference image {path}: {width}x{height} is {width * height:,} pixels, over the "
                             f"limit of {max_pixels:,} (--max-image-pixels)")
    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"reference image {path}: not a readable image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def face_crop_box(rgb: np.ndarray, crop_scale: float | None = None) -> tuple[int, int, int] | None:
    """(x, y, side) of the build's face crop, or None when no face is found."""
    from vividhead.pipelines.filter_config import FaceConfig
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


def resize_and_center_crop(rgb: np.ndarray, size: int = 512) -> np.ndarray:
    """Short side to `size` (PIL bilinear; both sides scaled and rounded up), then the centre `size` square."""
    h, w = rgb.shape[:2]
    scale = max(size / h, size / w)
    new_h, new_w = math.ceil(scale * h), math.ceil(scale * w)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample=Image.BILINEAR))
    top, left = int(round((new_h - size) / 2.0)), int(round((new_w - size) / 2.0))
    return np.array(resized[top: top + size, left: left + size])           # a writable copy


def prepare_reference(rgb: np.ndarray, size: int = 512, face_crop: bool = False
                      ) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """The `size` x `size` reference frame and the face box used (None: the whole image)."""
    box = face_crop_box(rgb) if face_crop else None
    if box is not None:
        x, y, side = box
        rgb = rgb[y: y + side, x: x + side]
    return resize_and_center_crop(rgb, size), box


def to_video_tensor(rgb: np.ndarray, frames: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 [H, W, 3] -> [1, 3, frames, H, W] in [-1, 1], computed in `dtype` (the image repeated)."""
    image = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).to(dtype)
    image = (image / 255 - 0.5) * 2
    return image[None, :, None].expand(1, 3, frames, *image.shape[1:]).contiguous()


# ----------------------------------------------------------------------------------- colour (sRGB, D65)
_RGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
_XYZ_TO_RGB = ((3.2404542, -1.5371385, -0.4985314), (-0.9692660, 1.8760108, 0.0415560), (0.0556434, -0.2040259, 1.0572252))
_WHITE = (0.95047, 1.0, 1.08883)
_EPSILON, _KAPPA = 0.008856, 903.3


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], channels last -> CIE Lab (D65), channels last."""
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ torch.tensor(_RGB_TO_XYZ, dtype=rgb.dtype, device=rgb.device).T
    xyz = (xyz / torch.tensor(_WHITE, dtype=rgb.dtype, device=rgb.device)).clamp(1e-8, 1.0)
    f = torch.where(xyz > _EPSILON, xyz ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    return torch.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], dim=-1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65), channels last -> sRGB clipped to [0, 1], channels last."""
    light, a, b = lab.unbind(-1)
    fy = (light + 16) / 116
    fx, fz = fy + a / 500, fy - b / 200
    x = torch.where(fx ** 3 > _EPSILON, fx ** 3, (116 * fx - 16) / _KAPPA)
    y = torch.where(light > _KAPPA * _EPSILON, fy ** 3, light / _KAPPA)
    z = torch.where(fz ** 3 > _EPSILON, fz ** 3, (116 * fz - 16) / _KAPPA)
    xyz = torch.stack([x, y, z], dim=-1) * torch.tensor(_WHITE, dtype=lab.dtype, device=lab.device)
    linear = xyz @ torch.tensor(_XYZ_TO_RGB, dtype=lab.dtype, device=lab.device).T
    return torch.where(linear > 0.0031308, 1.055 * linear.clamp(min=0) ** (1 / 2.4) - 0.055, 12.92 * linear).clamp(0, 1)


def lab_stats(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame Lab mean and (population) std of video [B, 3, T, H, W] in [-1, 1]: two [B, T, 1, 1, 3]."""
    lab = rgb_to_lab(((video + 1) / 2).permute(0, 2, 3, 4, 1))
    return lab.mean(dim=(2, 3), keepdim=True), lab.std(dim=(2, 3), keepdim=True, unbiased=False)


def color_correct(video: torch.Tensor, reference: tuple[torch.Tensor, torch.Tensor], strength: float = 1.0) -> torch.Tensor:
    """Match each frame's Lab mean and std of video [B, 3, T, H, W] in [-1, 1] to `reference` = lab_stats(image),
    then blend with the original frame at `strength`. Runs in the video's dtype."""
    if strength <= 0:
        return video
    if strength > 1:
        raise ValueError(f"colour correction strength must be in [0, 1], got {strength}")
    rgb = ((video + 1) / 2).permute(0, 2, 3, 4, 1)                                     # [B, T, H, W, 3]
    lab = rgb_to_lab(rgb)
    mean, std = lab.mean(dim=(2, 3), keepdim=True), lab.std(dim=(2, 3), keepdim=True, unbiased=False)
    std = torch.where(std < 1e-8, torch.ones_like(std), std)
    ref_mean, ref_std = (s.to(video.device, video.dtype) for s in reference)
    corrected = lab_to_rgb((lab - mean) * (ref_std / std) + ref_mean)
    blended = (1 - strength) * rgb + strength * corrected
    return (blended.permute(0, 4, 1, 2, 3) * 2 - 1).contiguous()


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [T, h, w, 3] -> [T, size, size, 3], bilinear."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([cv2.resize(frame, (size, size), interpolation=cv2.INTER_LINEAR) for frame in frames])


def to_uint8_frames(video: torch.Tensor) -> np.ndarray:
    """[1, 3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]: ((x + 1) / 2).clip(0, 1) * 255, truncated."""
    frames = (((video[0].float() + 1) / 2).clamp(0, 1) * 255).to(torch.uint8)
    return frames.permute(1, 2, 3, 0).cpu().numpy()
