"""How much the face crop's lossy codecs move Sync-C / Sync-D under the `syncnet_python` protocol.

    python benchmarks/sync_crop_codecs.py --syncnet weights/syncnet_v2.model    # the real SyncNet
    python benchmarks/sync_crop_codecs.py                                       # a SyncNet fitted per clip

syncnet_python's `run_pipeline.py` writes each face track as an XVID AVI (`cv2.VideoWriter`, fourcc
XVID, OpenCV's default quality), and `SyncNetInstance.evaluate` dumps that AVI to JPEGs at ffmpeg's
default MJPEG quality before SyncNet reads them. `vividhead eval`'s `syncnet_python` protocol
reproduces the JPEG step (`evaluation.sync.jpeg_round_trip`) but not the XVID one. For each real clip
of ../shared/media/video that has a face track of the protocol, this takes the protocol's lossless
crops (`evaluation.sync.syncnet_python_inputs`: the same frames, track and 16-bit audio) through:

- `lossless`: as cropped;
- `jpeg`: the JPEG round trip (what the protocol scores);
- `xvid`: OpenCV's XVID AVI, read back with OpenCV;
- `xvid+jpeg`: the XVID AVI, then the JPEG round trip (the reference tool's chain).

It prints the mean absolute difference of each variant's crops from the lossless ones (0-255 levels),
and Sync-C, Sync-D and the offset of each variant, with the change from `lossless` in per cent.

Without `--syncnet` no real SyncNet is available, so one is fitted on each clip's lossless crops
(tests/test_eval_sync.py's `fit_syncnet`: real architecture, embedding heads fitted contrastively on
that clip). Its scores show the direction and rough size of the codec effect on a network that
has learnt this face's lip motion; they are not the real SyncNet's. The pixel differences do not depend
on the network. Face boxes come from mediapipe (or SCRFD with `--scrfd`). The XVID AVI is decoded to BGR
before its JPEG round trip, which adds one YUV->BGR->YUV rounding (under half a level) that the
reference's ffmpeg dump does not have.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vividhead.evaluation.sync import jpeg_round_trip, syncnet_python_inputs
from vividhead.evaluation.videos import decode_video
from vividhead.models import syncnet as sn
from vividhead.models.face_detect import make_face_detector

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("lossless", "jpeg", "xvid", "xvid+jpeg")


def xvid_round_trip(crops_bgr: np.ndarray, folder: Path) -> np.ndarray:
    """[N, H, W, 3] BGR through `cv2.VideoWriter(..., fourcc XVID, 25 fps)` and back with cv2.VideoCapture,
    as run_pipeline.py's crop_video writes the track."""
    path = folder / "crop.avi"
    height, width = crops_bgr.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"XVID"), sn.FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"{path}: OpenCV cannot write XVID here (its video I/O has no MPEG-4 encoder)")
    for crop in crops_bgr:
        writer.write(np.ascontiguousarray(crop))
    writer.release()
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    if len(frames) != len(crops_bgr):
        raise RuntimeError(f"{path}: wrote {len(crops_bgr)} frames, read back {len(frames)}")
    return np.stack(frames)


def variants(crops: np.ndarray, folder: Path) -> dict[str, np.ndarray]:
    xvid = xvid_round_trip(crops, folder)
    return {"lossless": crops, "jpeg": jpeg_round_trip(crops), "xvid": xvid, "xvid+jpeg": jpeg_round_trip(xvid)}


def score(model: sn.SyncNet, crops: np.ndarray, audio: np.ndarray) -> sn.SyncScore:
    lip, aud = sn.embed(model, crops, audio)
    return sn.offset_scores(lip, aud, 15)


def fitted_syncnet(video, folder: Path) -> sn.SyncNet:
    """tests/test_eval_sync.py's SyncNet fitted on this clip (no real weights available)."""
    sys.path.insert(0, str(REPO / "tests"))
    from test_eval_sync import fit_syncnet

    path = fit_syncnet(video.frames, video.audio, folder / "fitted_syncnet.model")
    return sn.load_syncnet(path, torch.device("cpu"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--media", type=Path, default=REPO.parent / "shared" / "media" / "video",
                        help="folder of real talking-head clips")
    parser.add_argument("--syncnet", type=Path, help="syncnet_v2.model; none given: fit one per clip (see above)")
    parser.add_argument("--scrfd", type=Path, help="SCRFD ONNX for the face boxes; none given: mediapipe")
    parser.add_argument("--clips", nargs="*", help="clip file names (default: every clip in --media)")
    args = parser.parse_args()

    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    paths = sorted(p for p in args.media.glob("*.mp4") if not args.clips or p.name in args.clips)
    if not paths:
        print(f"no clips in {args.media}", file=sys.stderr)
        return 2
    detector = make_face_detector("auto", args.scrfd)
    real = sn.load_syncnet(args.syncnet, torch.device("cpu")) if args.syncnet else None
    print(f"SyncNet: {args.syncnet or 'fitted on each clip (tests/test_eval_sync.py fit_syncnet)'}; "
          f"face boxes: {detector.name}; OpenCV {cv2.__version__}\n")
    print("| clip | frames | MAD jpeg | MAD xvid | MAD xvid+jpeg | variant | Sync-C | Sync-D | offset "
          "| ΔSync-C % | ΔSync-D % |")
    print("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    started = time.perf_counter()
    for path in paths:
        video = decode_video(path, str(path))
        if video.audio is None:
            print(f"| {path.stem} | - | skipped: no audio |||||||||")
            continue
        inputs = syncnet_python_inputs(detector, video)
        if isinstance(inputs, str):
            print(f"| {path.stem} | - | skipped: {inputs} |||||||||")
            continue
        crops, audio = inputs
        with tempfile.TemporaryDirectory() as tmp:
            made = variants(crops, Path(tmp))
            model = real or fitted_syncnet(video, Path(tmp))
        mad = {name: float(np.abs(v.astype(np.int16) - crops).mean()) for name, v in made.items()}
        scores = {name: score(model, v, audio) for name, v in made.items()}
        base = scores["lossless"]
        for i, name in enumerate(VARIANTS):
            s = scores[name]
            head = (f"| {path.stem} | {len(crops)} | {mad['jpeg']:.2f} | {mad['xvid']:.2f} | {mad['xvid+jpeg']:.2f} "
                    if i == 0 else "| | | | | ")
            print(f"{head}| {name} | {s.lse_c:.4g} | {s.lse_d:.4g} | {s.offset} | "
                  f"{100 * (s.lse_c - base.lse_c) / base.lse_c:+.2f} | {100 * (s.lse_d - base.lse_d) / base.lse_d:+.2f} |")
    detector.close()
    print(f"\n{len(paths)} clips in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
