"""Framing rules of the decode pass: does the face stay in its crop, and is it the only speaker on screen?

Pure measures over face boxes, shared by the face track (stage 5) and visibility (stage 7):

- `drift`: how far the tracked face has moved from where it was when the clip opened, as a share of
  the crop side. A face that starts off-centre (the crop is clamped at the frame edge) is not
  penalised for where it starts, only for moving. When the drift passes `face.max_drift` the face
  is leaving the crop: the decode pass ends the clip at that frame and a new piece starts there,
  which re-centres a new crop on the face (docs/filters.md).
- `listed_faces`: the detections that a dataset list's face box points at (a box, or AVSpeech's face
  centre); a piece whose faces all miss the box is rejected as `listed_face_not_found`.
- `comparable_faces`: the other faces of a full frame whose box side is at least `min_share` of the
  speaker's, the paper's "single visible speaker" rule (section 2.1) counts them at 1 fps.
"""

from __future__ import annotations

import numpy as np

from vividhead.models.face_detect import Face
from vividhead.pipelines.records import FaceBox


def drift(face: Face, start: Face, crop_side: float) -> float:
    """Distance of the face centre from its centre at the clip start, as a share of the crop side."""
    (x, y), (x0, y0) = face.center, start.center
    return float(np.hypot(x - x0, y - y0) / crop_side)


def follow(faces: list[Face], previous: Face | None, size: int) -> Face | None:
    """The tracked speaker among a crop's faces: the one nearest its last known position (the crop
    centre before the first detection), or None."""
    if not faces:
        return None
    x, y = previous.center if previous is not None else (size / 2, size / 2)
    return min(faces, key=lambda f: np.hypot(f.center[0] - x, f.center[1] - y))


def speaker(faces: list[Face], crop: tuple[int, int, int]) -> Face | None:
    """Among a full frame's faces, the one the crop holds: nearest the crop centre, with its centre inside."""
    x, y, side = crop
    inside = [f for f in faces if x <= f.center[0] <= x + side and y <= f.center[1] <= y + side]
    if not inside:
        return None
    return min(inside, key=lambda f: np.hypot(f.center[0] - x - side / 2, f.center[1] - y - side / 2))


def listed_faces(faces: list[Face], box: FaceBox, frame: np.ndarray) -> list[Face]:
    """The faces a list's face box points at: those whose centre lies inside the box or, for a point box
    (a listed face centre), whose own box holds the point. The detector still has to find the face: the
    list only chooses among detections, in a crowded frame the listed speaker."""
    h, w = frame.shape[:2]
    x0, y0, x1, y1 = box.in_frame(w, h)
    if x1 - x0 < 1 and y1 - y0 < 1:
        return [f for f in faces if f.x0 <= x0 <= f.x1 and f.y0 <= y0 <= f.y1]
    return [f for f in faces if x0 <= f.center[0] <= x1 and y0 <= f.center[1] <= y1]


def comparable_faces(faces: list[Face], crop: tuple[int, int, int], min_share: float) -> int:
    """How many faces of a full frame, besides the speaker in the crop, have a side of at least
    `min_share` x the speaker's; 0 when the crop holds no face (visibility counts those samples)."""
    main = speaker(faces, crop)
    if main is None:
        return 0
    return sum(1 for f in faces if f is not main and f.side >= min_share * main.side)
