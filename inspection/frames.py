"""Frames for the report: a few frames of a kept clip's mp4, or of a source's time range, as small JPEGs.

Kept clips are decoded from their shard bytes. Rejected clips are decoded from the source file at
the manifest's time range (seeking, never decoding the whole source), with the crop box drawn on.
When the source can not be read, the caller gets the reason instead of frames.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vividhead.media import MediaError, frames_at, probe, read_png

POSITIONS = (0.1, 0.5, 0.9)     # where in a clip or range the frames are taken
TILE = 128                      # thumbnail height in pixels
JPEG_QUALITY = 78


@dataclass(frozen=True)
class Frames:
    """Decoded tiles as JPEG data URIs, or the reason there are none."""

    tiles: tuple[str, ...] = ()
    problem: str | None = None


def data_uri(image_bgr: np.ndarray, height: int = TILE) -> str:
    """A small JPEG of an image, as a data: URI."""
    scale = height / image_bgr.shape[0]
    width = max(1, int(round(image_bgr.shape[1] * scale)))
    small = cv2.resize(image_bgr, (width, height), interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode("ascii")


def clip_tiles(mp4: bytes, mask_png: bytes | None = None) -> Frames:
    """Frames of a kept clip at POSITIONS, plus its first frame with the mask outline when given."""
    try:
        duration = probe(mp4, origin="the clip").duration
        images = frames_at(mp4, [0.0] + [duration * position for position in POSITIONS], "bgr24", origin="the clip")
    except MediaError as error:
        return Frames(problem=f"the clip does not decode: {error.detail}")
    if not images:
        return Frames(problem="the clip holds no frames")
    first, rest = images[0], images[1:]
    tiles = [data_uri(image) for image in rest]
    if mask_png:
        mask = read_png(mask_png, grey=True)
        if mask is not None and mask.shape == first.shape[:2]:
            outlined = first.copy()
            contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            cv2.drawContours(outlined, contours, -1, (60, 220, 60), 3)
            tiles.append(data_uri(outlined))
    return Frames(tuple(tiles))


def source_tiles(uri: str | None, start: float | None, end: float | None,
                 crop: tuple[int, int, int] | None) -> Frames:
    """Frames of a source's [start, end) range (the whole source without one), crop box drawn on."""
    if not uri:
        return Frames(problem="the manifest names no source")
    if uri.startswith(("http://", "https://")):
        return Frames(problem=f"the source is remote ({uri}) and the report does not download it")
    path = Path(uri[7:] if uri.startswith("file://") else uri)
    if not path.is_file():
        return Frames(problem=f"the source is unavailable: {path} does not exist here")
    try:
        if start is None or end is None or end <= start:
            start, end = 0.0, probe(path).duration
        images = frames_at(path, [start + (end - start) * position for position in POSITIONS], "bgr24")
    except MediaError as error:
        return Frames(problem=f"the source does not decode: {error.detail}")
    if not images:
        return Frames(problem="no frame decodes in the source's time range")
    tiles = []
    for image in images:
        if crop is not None:
            x, y, side = crop
            thickness = max(2, image.shape[0] // 120)
            cv2.rectangle(image, (x, y), (x + side, y + side), (40, 200, 255), thickness)
        tiles.append(data_uri(image))
    return Frames(tuple(tiles))
