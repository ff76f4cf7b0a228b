"""mediapipe face mesh (ships its model): 468 landmarks, mouth opening and a face mask.

`FaceMesh` wraps one mediapipe graph (video mode tracks between frames; image mode detects on
every call). `face_mask(rgb)` is the one-shot helper the build uses for `mask.png`;
`mesh_track(frames)` gives per-frame mouth openings and face boxes (e.g. for `score_sync`);
`lip_track(frames)` gives the inner and outer lip gaps (and, when asked, the face boxes: a box reads
all 468 landmarks, the gaps only six); `mouth_track(frames)` gives the mouth measures the weight-free
sync check reads (`MOUTH_COLUMNS`: the two gaps, the inner-lip area and the darkness of the mouth region)
and the grey mouth patches its canonical signal reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cv2
import numpy as np

# Landmark indices of the canonical mediapipe face mesh.
UPPER_INNER_LIP = 13
LOWER_INNER_LIP = 14
UPPER_OUTER_LIP = 0
LOWER_OUTER_LIP = 17
MOUTH_LEFT = 61
MOUTH_RIGHT = 291
FOREHEAD = 10
CHIN = 152
# The inner lip ring of the mesh (FACEMESH_LIPS), in polygon order.
INNER_LIP_RING = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95)
MOUTH_COLUMNS = ("inner_gap", "outer_gap", "area", "dark")
PATCH_W, PATCH_H = 32, 16                              # grey mouth patch of `mouth_patch`


@dataclass(frozen=True)
class MeshResult:
    """Landmarks of one face, in pixels of the image given ([468, 3]: x, y, z scaled like x).

    mediapipe's landmarks are converted when first read: `points` converts all of them, `lip_gaps`
    only the six it measures (the same float32 values either way).
    """

    landmarks: Sequence[Any]                           # mediapipe NormalizedLandmark, coordinates 0-1
    width: int
    height: int

    @cached_property
    def points(self) -> np.ndarray:
        return self._pixels(range(len(self.landmarks)))

    def _pixels(self, indices: Iterable[int]) -> np.ndarray:
        """[len(indices), 3] float32 pixel coordinates of these landmarks."""
        w, h = self.width, self.height
        return np.array([(p.x * w, p.y * h, p.z * w) for p in map(self.landmarks.__getitem__, indices)],
                        dtype=np.float32)

    def mouth_opening(self) -> float:
        """Inner-lip gap divided by the face height (forehead to chin): scale-free, ~0 when closed."""
        return self.lip_gaps()[0]

    def lip_gaps(self) -> tuple[float, float]:
        """Inner and outer lip gaps divided by the face height (forehead to chin)."""
        forehead, chin, upper_inner, lower_inner, upper_outer, lower_outer = self._pixels(
            (FOREHEAD, CHIN, UPPER_INNER_LIP, LOWER_INNER_LIP, UPPER_OUTER_LIP, LOWER_OUTER_LIP))[:, :2]
        height = np.linalg.norm(forehead - chin)
        if height <= 0:
            return 0.0, 0.0
        inner = np.linalg.norm(upper_inner - lower_inner)
        outer = np.linalg.norm(upper_outer - lower_outer)
        return float(inner / height), float(outer / height)

    def lip_area(self) -> float:
        """Area inside the inner lip ring divided by the face height squared: scale-free, ~0 when closed."""
        xy = self._pixels((FOREHEAD, CHIN) + INNER_LIP_RING)[:, :2]
        height = float(np.linalg.norm(xy[0] - xy[1]))
        return float(polygon_area(xy[2:]) / height ** 2) if height > 0 else 0.0

    def mouth_points(self) -> np.ndarray:
        """[4, 2] pixels of the mouth corners (61, 291) and the outer lip middles (0, 17)."""
        return self._pixels((MOUTH_LEFT, MOUTH_RIGHT, UPPER_OUTER_LIP, LOWER_OUTER_LIP))[:, :2]

    def box(self) -> tuple[float, float, float, float]:
        """Tight landmark box x0, y0, x1, y1."""
        xy = self.points[:, :2]
        return float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max())

    def mask(self, height: int, width: int) -> np.ndarray:
        """uint8 mask (255 = face): the filled convex hull of the landmarks."""
        out = np.zeros((height, width), np.uint8)
        hull = cv2.convexHull(np.round(self.points[:, :2]).astype(np.int32))
        cv2.fillConvexPoly(out, hull, 255)
        return out


class FaceMesh:
    """One mediapipe face-mesh graph. Use as a context manager or call `close()`."""

    def __init__(self, video: bool = True, min_confidence: float = 0.5) -> None:
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=not video,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def __call__(self, rgb: np.ndarray) -> MeshResult | None:
        """Landmarks of the most prominent face in an RGB uint8 image, or None."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"face mesh expects an RGB uint8 image [H, W, 3], got {rgb.dtype} {rgb.shape}")
        found = self._mesh.process(np.ascontiguousarray(rgb))
        if not found.multi_face_landmarks:
            return None
        h, w = rgb.shape[:2]
        return MeshResult(found.multi_face_landmarks[0].landmark, w, h)

    def close(self) -> None:
        self._mesh.close()

    def __enter__(self) -> "FaceMesh":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def face_mask(rgb: np.ndarray) -> np.ndarray:
    """uint8 mask [H, W] of the face in one RGB image (255 = face, all zeros when none is found)."""
    with FaceMesh(video=False) as mesh:
        found = mesh(rgb)
    h, w = rgb.shape[:2]
    return found.mask(h, w) if found is not None else np.zeros((h, w), np.uint8)


def lip_track(frames_rgb: Iterable[np.ndarray], max_side: int = 256,
              boxes: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Per frame of a video: inner and outer lip gaps (float32 [n, 2], see `MeshResult.lip_gaps`) and the
    face box (float64 [n, 4], x0 y0 x1 y1 in the frames' pixels; None unless `boxes`), NaN where no face
    is found. Frames are shrunk to `max_side` for the mesh."""
    gaps, found_boxes = [], []
    with FaceMesh(video=True) as mesh:
        for frame in frames_rgb:
            scale = min(1.0, max_side / max(frame.shape[:2]))
            small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
            found = mesh(small)
            gaps.append((np.nan, np.nan) if found is None else found.lip_gaps())
            if boxes:
                found_boxes.append([np.nan] * 4 if found is None else [v / scale for v in found.box()])
    return (np.asarray(gaps, np.float32).reshape(-1, 2),
            np.asarray(found_boxes, np.float64).reshape(-1, 4) if boxes else None)


def polygon_area(xy: np.ndarray) -> np.ndarray:
    """Shoelace area of polygons [..., k, 2] -> [...]."""
    x, y = xy[..., 0], xy[..., 1]
    return 0.5 * np.abs((x * np.roll(y, -1, axis=-1) - np.roll(x, -1, axis=-1) * y).sum(axis=-1))


def mouth_patch(rgb: np.ndarray, corners_and_lips: np.ndarray) -> np.ndarray:
    """Grey uint8 [PATCH_H, PATCH_W] patch of the mouth region: centred on the four points of
    `MeshResult.mouth_points`, 1.6x the corner-to-corner width, half as high."""
    left, right, upper, lower = corners_and_lips
    centre = (left + right + upper + lower) / 4
    width = max(1.6 * float(np.linalg.norm(right - left)), 4.0)
    h, w = rgb.shape[:2]
    x0, y0 = max(int(round(centre[0] - width / 2)), 0), max(int(round(centre[1] - width / 4)), 0)
    x1, y1 = min(int(round(centre[0] + width / 2)), w), min(int(round(centre[1] + width / 4)), h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((PATCH_H, PATCH_W), np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (PATCH_W, PATCH_H), interpolation=cv2.INTER_AREA)


def mouth_darkness(patches: np.ndarray) -> np.ndarray:
    """How dark the middle of mouth patches [..., PATCH_H, PATCH_W] is against the whole patch (an open
    mouth shows its dark inside): minus the mean of the central half over the patch mean (+1), [...]."""
    patches = np.asarray(patches, np.float64)
    centre = patches[..., 4:12, 8:24].mean(axis=(-2, -1))
    return -centre / (patches.mean(axis=(-2, -1)) + 1.0)


def mouth_track(frames_rgb: Iterable[np.ndarray], max_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a video: the `MOUTH_COLUMNS` (inner and outer lip gaps and inner-lip area over the face
    height, and the mouth darkness), float32 [n, 4], NaN where no face is found; and the grey mouth patches
    (`mouth_patch`), uint8 [n, PATCH_H, PATCH_W], zeros where no face is found. Frames are shrunk to
    `max_side` for the mesh, and the mouth patch is read from the same shrunk frame."""
    rows, patches = [], []
    with FaceMesh(video=True) as mesh:
        for frame in frames_rgb:
            scale = min(1.0, max_side / max(frame.shape[:2]))
            small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
            found = mesh(small)
            if found is None:
                rows.append((np.nan,) * len(MOUTH_COLUMNS))
                patches.append(np.zeros((PATCH_H, PATCH_W), np.uint8))
            else:
                patch = mouth_patch(small, found.mouth_points())
                rows.append((*found.lip_gaps(), found.lip_area(), float(mouth_darkness(patch))))
                patches.append(patch)
    return (np.asarray(rows, np.float32).reshape(-1, len(MOUTH_COLUMNS)),
            np.asarray(patches, np.uint8).reshape(-1, PATCH_H, PATCH_W))


def mesh_track(frames_rgb: Iterable[np.ndarray], max_side: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of a video: mouth opening (float32 [n], the inner lip gap) and face box (float64 [n, 4]),
    NaN where no face is found. Frames are shrunk to `max_side` for the mesh."""
    gaps, boxes = lip_track(frames_rgb, max_side)
    return gaps[:, 0], boxes


def mouth_openings(frames_rgb: Iterable[np.ndarray]) -> np.ndarray:
    """Mouth opening per frame of a video (float32 [n]), NaN where no face is found."""
    return mesh_track(frames_rgb, max_side=10_000)[0]
