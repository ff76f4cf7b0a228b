"""Per-frame mouth features and audio of every dev speaker, extracted once and cached (for benchmarks/sync_cv.py).

    python benchmarks/sync_features.py [--dev ../shared/media/dev] [--cache /tmp/sync_feats]

For every clip DEV.md lists as a speaker, and for the silent face (`lee`, used for voice-overs):
1. a 25 fps square crop around the first frame's main face, at most 512 px (the build's crop rule,
   `face.crop_scale`), made with ffmpeg as `benchmarks/curation_accuracy.py` makes it;
2. the face mesh on every frame shrunk to `sync.proxy_max_resolution` (as stage 10 runs it): all 468
   landmarks in those pixels, NaN where no face was found, and the 32x16 grey mouth patch that
   `face_mesh.mouth_track` reads (for appearance features);
3. the source's 16 kHz mono audio.

Each clip is one `<stem>.npz` in the cache folder (outside the project; never the media itself in the
repository). The face mesh is the expensive part; the cross-validation then runs on these arrays.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np

from vividhead.evaluation.curation_cases import dev_clips
from vividhead.models.face_detect import MediapipeFaceDetector, crop_box, main_face
from vividhead.models.face_mesh import PATCH_H, PATCH_W, FaceMesh, mouth_patch
from vividhead.pipelines.clip_media import iter_frames
from vividhead.pipelines.config import load_build_config

REPO = Path(__file__).resolve().parents[1]
SILENT_FACE = "eknim__video-retalking__lee.mp4"     # DEV.md: mouth mostly closed, no speech


def crop_video(source: Path, out: Path, crop_scale: float, size: int) -> tuple[Path, float, float]:
    """A 25 fps square crop around the first frame's main face, scaled to at most `size` (the build's rule)."""
    with av.open(str(source)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="rgb24")
    detector = MediapipeFaceDetector()
    faces = detector(first)
    detector.close()
    h, w = first.shape[:2]
    x, y, side = crop_box(main_face(faces), w, h, crop_scale) if faces else (0, 0, min(w, h))
    scale = min(size, side) // 2 * 2                  # x264 needs even sides
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:v:0", "-vf",
                    f"fps=25,crop={side}:{side}:{x}:{y},scale={scale}:{scale}", "-c:v", "libx264", "-preset",
                    "veryfast", "-crf", "18", str(out)], check=True)
    return out, 0.0, float("inf")


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
                points.append(found.points[:, :2])
                patches.append(mouth_patch(small, found.mouth_points()))
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
        crop = crop_video(dev / clip.file, cache / "crops" / f"{stem}.mp4", config.face.crop_scale, config.face.size)[0]
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
