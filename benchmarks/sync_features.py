"""Per-frame mouth features and audio of every dev speaker, extracted once and cached (for benchmarks/sync_cv.py).

    python benchmarks/sync_features.py [--dev ../shared/media/dev] [--cache /tmp/sync_feats]

For every clip DEV.md lists as a speaker, and for the silent face (`lee`, used for voice-overs):
1. a 25 fps square crop around the first frame's main face, at most 512 px (the build's crop rule,
   `face.crop_scale`), made with ffmpeg as `benchmarks/curation_accuracy.py` makes it;
2. the face mesh on every frame shrunk to `sync.proxy_max_resolution` (as stage 10 runs it): all 468
   landmarks in those pixels, NaN where no face was found, and a 32x16 grey patch of the mouth region
   (for appearance features);
3. the source's 16 kHz mono audio.

Each clip is one `<stem>.npz` in the cache folder (outside the project; never the media itself in the
repository). The face mesh is the expensive part; the cross-validation then runs on these arrays.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from vividhead.evaluation.curation_cases import dev_clips
from vividhead.models.face_mesh import FaceMesh
from vividhead.pipelines.clip_media import iter_frames
from vividhead.pipelines.config import load_build_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curation_accuracy import SILENT_FACE, _crop_video  # noqa: E402  (the benchmark's own crop rule)

REPO = Path(__file__).resolve().parents[1]
PATCH_W, PATCH_H = 32, 16
MOUTH_CORNERS = (61, 291)
MOUTH_OUTER = (0, 17)


def mouth_patch(small: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Grey [PATCH_H, PATCH_W] patch around the mouth: 1.6x the corner-to-corner width, half as high."""
    left, right = points[MOUTH_CORNERS[0]], points[MOUTH_CORNERS[1]]
    centre = (left + right + points[MOUTH_OUTER[0]] + points[MOUTH_OUTER[1]]) / 4
    width = max(1.6 * float(np.linalg.norm(right - left)), 4.0)
    x0, y0 = int(round(centre[0] - width / 2)), int(round(centre[1] - width / 4))
    x1, y1 = int(round(centre[0] + width / 2)), int(round(centre[1] + width / 4))
    h, w = small.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return np.zeros((PATCH_H, PATCH_W), np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(small[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (PATCH_W, PATCH_H), interpolation=cv2.INTER_AREA)


def track(video: Path, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks [n, 468, 2] (mesh pixels, NaN = no face) and mouth patches [n, PATCH_H, PATCH_W]."""
    points, patches = [], []
    with FaceMesh(video=True) as mesh:
        for _, frame in iter_frames(video):
            scale = min(1.0, max_side / max(frame.shape[:2]))
            small = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else frame
            found = mesh(small)
            if found is None:
                points.append(np.full((468, 2), np.nan, np.float32))
                patches.append(np.zeros((PATCH_H, PATCH_W), np.uint8))
            else:
                xy = found.points[:, :2]
                points.append(xy)
                patches.append(mouth_patch(small, xy))
    return np.stack(points), np.stack(patches)


def audio_16k(source: Path, out: Path) -> np.ndarray:
    """The source's first audio stream as 16 kHz mono float32."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:a:0",
                    "-ac", "1", "-ar", "16000", "-f", "f32le", str(out)], check=True)
    return np.fromfile(out, np.float32)


def extract(dev: Path, cache: Path) -> list[Path]:
    """Cache every speaker's (and the silent face's) features; the npz paths, in DEV.md's order."""
    config = load_build_config(None)
    cache.mkdir(parents=True, exist_ok=True)
    (cache / "crops").mkdir(exist_ok=True)
    out = []
    for clip in dev_clips(dev):
        if not clip.speaker and clip.file != SILENT_FACE:
            continue
        stem = Path(clip.file).stem
        target = cache / f"{stem}.npz"
        out.append(target)
        if target.is_file():
            continue
        crop = _crop_video(dev / clip.file, cache / "crops" / f"{stem}.mp4", config.face.crop_scale, config.face.size)[0]
        points, patches = track(crop, config.sync.proxy_max_resolution)
        audio = audio_16k(dev / clip.file, cache / "crops" / f"{stem}.f32")
        np.savez_compressed(target, points=points, patches=patches, audio=audio, speaker=clip.speaker,
                            source=clip.file)
        print(f"{clip.file}: {len(points)} frames, face in {np.isfinite(points[:, 0, 0]).mean():.2f}, "
              f"{len(audio) / 16000:.1f} s audio", flush=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dev", type=Path, default=REPO.parent / "shared" / "media" / "dev")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/sync_feats"))
    args = parser.parse_args()
    if not (args.dev / "DEV.md").is_file():
        print(f"dev footage not found: {args.dev}/DEV.md", file=sys.stderr)
        return 2
    extract(args.dev, args.cache)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
