"""Per-stage throughput (video frames per second) of `vividhead build` on this machine.

Usage: python benchmarks/stage_throughput.py [--video FILE] [--weights manifests/weights.yaml] [--threads N]

The video (default: ../shared/media/video/videoretalking_face1.mp4, else a synthetic test pattern) is
normalised with ffmpeg to a 512x512 25 fps clip with 16 kHz audio, as the build stages it. Then:

- stages 8-11 (occlusion, speech, sync, annotate) run `process()` on that clip with their embedded
  defaults, and with real weights where the weights manifest has them;
- SyncNet and wav2vec2-base are also timed with random weights in their real architectures (the
  released files are not on this machine; speed does not depend on the weight values);
- the build core's single-pass pieces (decode, scene scoring, DIS flow, face detection; stages 3-7)
  are timed per frame on the source video when their classes are importable.

Setup (model loading) is excluded; each figure is frames / wall seconds of one pass.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "media" / "video" / "videoretalking_face1.mp4"


def stage_clip(video: Path | None, out: Path) -> tuple[Path, Path]:
    """The benchmark clip: 512x512 25 fps H.264 and 16 kHz mono wav."""
    mp4, wav = out / "clip.mp4", out / "clip.wav"
    scale = "fps=25,scale=512:512:force_original_aspect_ratio=increase,crop=512:512"
    if video is None:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=512x512:rate=25:duration=6",
                        "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "veryfast", str(mp4)], check=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=6",
                        "-ar", "16000", "-ac", "1", str(wav)], check=True)
    else:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-an", "-vf", scale,
                        "-c:v", "libx264", "-preset", "veryfast", str(mp4)], check=True)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(video), "-vn", "-ac", "1", "-ar", "16000",
                        "-c:a", "pcm_s16le", str(wav)], check=True)
    return mp4, wav


def make_clip(mp4: Path, wav: Path):
    import numpy as np

    from vividhead.models.face_mesh import FaceMesh
    from vividhead.pipelines.clip_media import iter_frames
    from vividhead.pipelines.records import Clip, Source

    boxes = []
    with FaceMesh(video=True) as mesh:       # the face track the crop stage would hand over
        for _, rgb in iter_frames(mp4):
            found = mesh(rgb)
            boxes.append(found.box() if found else (np.nan,) * 4)
    track = np.asarray(boxes, np.float32)
    return Clip(key="bench", source=Source(source_id="bench", uri=str(mp4)), start=0.0, end=len(track) / 25,
                n_frames=len(track), video_path=str(mp4), wav_path=str(wav), face_track=track)


def time_stage(label: str, stage, clip) -> tuple[str, str, float, str]:
    stage.setup()
    tick = time.perf_counter()
    result = stage.process(clip)
    seconds = time.perf_counter() - tick
    stage.teardown()
    return label, stage.mode(), clip.n_frames / seconds, (result.reject or "kept")


def random_syncnet(path: Path) -> Path:
    """SyncNet with random weights, saved with the original syncnet_v2.model keys."""
    import torch

    from vividhead.models.syncnet import SyncNet

    torch.save({k: v for k, v in SyncNet().state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


def random_wav2vec2_base(folder: Path) -> Path:
    """wav2vec2-base's architecture (12 layers, 768 wide) with random weights, via save_pretrained."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    Wav2Vec2Model(Wav2Vec2Config()).eval().save_pretrained(folder)
    Wav2Vec2FeatureExtractor(do_normalize=True, sampling_rate=16000).save_pretrained(folder)
    return folder


def model_stage_rows(clip, weights, tmp: Path) -> list[tuple[str, str, float, str]]:
    from vividhead.pipelines.stages import STAGES

    CLIP_STAGES = {stage.name: stage.model for stage in STAGES if stage.model}
    from vividhead.pipelines.filter_config import AnnotateConfig, OcclusionConfig, SpeechConfig, SyncConfig
    from vividhead.weights import Weights

    none = Weights()
    rows = [
        time_stage("8 occlusion (mediapipe hands)", CLIP_STAGES["occlusion"](OcclusionConfig(), none), clip),
        time_stage("9 speech (silero-vad)", CLIP_STAGES["speech"](SpeechConfig(), none), clip),
        time_stage("10 sync (weight-free check)", CLIP_STAGES["sync"](SyncConfig(), none), clip),
        time_stage("11 annotate (log-mel, mask)", CLIP_STAGES["annotate"](AnnotateConfig(), none), clip),
    ]
    syncnet = random_syncnet(tmp / "syncnet_v2.model")
    rows.append(time_stage("10 sync (SyncNet, random weights)",
                           CLIP_STAGES["sync"](SyncConfig(), Weights(syncnet=syncnet)), clip))
    w2v = random_wav2vec2_base(tmp / "wav2vec2-base")
    rows.append(time_stage("11 annotate (wav2vec2-base, random weights)",
                           CLIP_STAGES["annotate"](AnnotateConfig(), Weights(wav2vec2=w2v)), clip))
    if weights is not None:
        for name, cls in CLIP_STAGES.items():
            stage = cls(None, weights)
            if stage.mode() == "weights":
                rows.append(time_stage(f"{name} (manifest weights)", stage, clip))
    return rows


def core_rows(video: Path) -> list[tuple[str, str, float, str]]:
    """Stages 3-7 pieces per frame of the source video (decode, scenes, flow, face detection)."""
    import cv2

    from vividhead.pipelines.clip_media import iter_frames

    rows = []
    tick = time.perf_counter()
    frames = [rgb for _, rgb in iter_frames(video)]
    size = f"{frames[0].shape[1]}x{frames[0].shape[0]}"
    rows.append(("3-4 decode to RGB (PyAV)", "-", len(frames) / (time.perf_counter() - tick), size))
    try:
        from vividhead.models.face_detect import MediapipeFaceDetector
        from vividhead.pipelines.motion import MotionScorer
        from vividhead.pipelines.scenes import SceneScorer
    except ImportError as err:
        return rows + [("3-7 build core", "-", float("nan"), f"not importable: {err}")]
    small = [cv2.resize(f, (256, round(256 * f.shape[0] / f.shape[1]))) for f in frames]
    scenes, motion = SceneScorer(), MotionScorer()
    tick = time.perf_counter()
    for f in small:
        scenes.update(f)
    rows.append(("3 scene scoring (256 px)", "-", len(small) / (time.perf_counter() - tick), ""))
    gray = [cv2.cvtColor(cv2.resize(f, (160, round(160 * f.shape[0] / f.shape[1]))), cv2.COLOR_RGB2GRAY) for f in frames]
    tick = time.perf_counter()
    for g in gray:
        motion.update(g)
    rows.append(("6 DIS flow (160 px)", "-", len(gray) / (time.perf_counter() - tick), ""))
    detector = MediapipeFaceDetector()
    tick = time.perf_counter()
    for f in frames:
        detector(f)
    rows.append(("5/7 face detection (mediapipe, every frame)", "default", len(frames) / (time.perf_counter() - tick), ""))
    detector.close()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, default=DEFAULT_VIDEO if DEFAULT_VIDEO.is_file() else None)
    parser.add_argument("--weights", type=Path, help="a weights manifest; stages whose weights exist are timed too")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (this machine has 2 cores)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    weights = None
    if args.weights:
        from vividhead.weights import load_weights_manifest

        weights = load_weights_manifest(args.weights)
    with tempfile.TemporaryDirectory() as tmp:
        mp4, wav = stage_clip(args.video, Path(tmp))
        clip_frames = make_clip(mp4, wav)
        print(f"input: {args.video or 'synthetic test pattern'}; clip {clip_frames.n_frames} frames 512x512 @ 25 fps; "
              f"torch threads {args.threads}; cpu count {os.cpu_count()}")
        rows = core_rows(args.video) if args.video else []
        for label, mode, fps, note in rows:
            print(f"{label:48s} {mode:8s} {fps:9.1f} frames/s  {note}")
        for label, mode, fps, note in model_stage_rows(clip_frames, weights, Path(tmp)):
            print(f"{label:48s} {mode:8s} {fps:9.1f} frames/s  {note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
