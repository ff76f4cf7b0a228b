"""Sync-C / Sync-D through `vividhead eval`'s code path: a real clip against itself with audio delayed 0.5 s.

Setup (synthetic SyncNet, documented): no SyncNet weights can be downloaded, so the test fits one.
The network is the real SyncNet v2 (`vividhead.models.syncnet`) with random convolution towers whose
BatchNorm statistics are calibrated on the clip, and whose two embedding heads are fitted on this clip
contrastively: a 5-frame mouth window and the MFCC window at the same time are pulled together, windows
>= 2 frames apart pushed apart. It is saved as a plain state dict with the original key names and loaded
by `load_syncnet`, as real weights are. Because it is fitted on the clip it scores, the test checks the
evaluation path (decoding, face track, reference crops, MFCC windows, offset search, aggregation),
not SyncNet's generalisation: the original must score a higher Sync-C, a lower Sync-D and an offset
within one frame; the 0.5 s delayed copy must be found about 12 frames off, with the sign of
the reference tool's convention (negative: the audio must be advanced).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from vividhead.evaluation.runner import EvalConfig, run_eval
from vividhead.evaluation.sync import face_track
from vividhead.evaluation.videos import list_videos
from vividhead.models import syncnet as sn
from vividhead.models.face_detect import make_face_detector
from vividhead.weights import Weights

SHARED = Path(os.environ.get("VIVIDHEAD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
CLIP = SHARED / "media" / "video" / "videoretalking_face3.mp4"   # real interview, 25 fps, speech in sync

pytestmark = pytest.mark.skipif(not CLIP.is_file(), reason=f"test media absent: {CLIP} (../shared/media not found)")


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def fit_syncnet(frames: np.ndarray, audio: np.ndarray, path: Path, steps: int = 120, seed: int = 0) -> Path:
    """Fit SyncNet's embedding heads on one in-sync clip; save in the syncnet_v2.model format."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(seed)
        detector = make_face_detector("mediapipe", None)
        crops = sn.crop_faces(frames, face_track(detector, frames))
        detector.close()
        mfcc = torch.from_numpy(sn.mfcc(audio).astype(np.float32))
        n = min(len(crops), mfcc.shape[1] // sn.MFCC_PER_FRAME) - sn.VIDEO_WINDOW
        video = torch.from_numpy(crops).permute(3, 0, 1, 2).float()
        lips = torch.stack([video[:, i:i + sn.VIDEO_WINDOW] for i in range(n)])
        columns = torch.arange(0, mfcc.shape[1] - sn.MFCC_WINDOW + 1, 2)          # sub-frame audio shifts too
        auds = torch.stack([mfcc[None, :, j:j + sn.MFCC_WINDOW] for j in columns.tolist()])
        model = sn.SyncNet()
        for module in model.modules():          # BatchNorm: cumulative statistics of the clip
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.momentum = None
        model.train()
        with torch.no_grad():
            lip_feats, aud_feats = model.netcnnlip(lips).flatten(1), model.netcnnaud(auds).flatten(1)
        for module in (*model.netfclip.modules(), *model.netfcaud.modules()):
            if isinstance(module, torch.nn.BatchNorm1d):
                module.momentum = 0.1
        gap = (columns[None, :] - sn.MFCC_PER_FRAME * torch.arange(n)[:, None]).abs()
        positive, negative = gap <= 1, gap >= 2 * sn.MFCC_PER_FRAME
        heads = [*model.netfclip.parameters(), *model.netfcaud.parameters()]
        optimiser = torch.optim.Adam(heads, lr=2e-3)
        for _ in range(steps):
            dist = torch.cdist(model.netfclip(lip_feats), model.netfcaud(aud_feats))
            loss = (dist[positive] ** 2).mean() + (torch.relu(1.0 - dist[negative]) ** 2).mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        torch.save(model.eval().state_dict(), path)
        return path
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """The first 3 s of the clip, and the same with its audio delayed by 0.5 s (silence first)."""
    folder = tmp_path_factory.mktemp("sync videos")
    common = ["-t", "3", "-vf", "scale=320:320", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac"]
    _ffmpeg("-i", str(CLIP), *common, str(folder / "original.mp4"))
    _ffmpeg("-i", str(CLIP), "-af", "adelay=500:all=1", *common, str(folder / "delayed 0.5s.mp4"))
    return folder


def test_original_beats_audio_delayed_by_half_a_second(clips, tmp_path):
    original = list_videos(clips / "original.mp4")[0].load()
    weights = Weights(syncnet=fit_syncnet(original.frames, original.audio, tmp_path / "syncnet_v2.model"))
    report = run_eval(clips, None, weights, EvalConfig(metrics=("sync",), sync_protocol="exact", device="cpu"))
    scores = {v.key: v for v in report.videos}
    orig, delayed = scores["original"], scores["delayed 0.5s"]
    assert orig.sync_c > delayed.sync_c + 0.5, (orig, delayed)
    assert orig.sync_d < delayed.sync_d, (orig, delayed)
    assert abs(orig.offset) <= 1, orig
    # 0.5 s = 12.5 frames at 25 fps; negative: the delayed audio must be advanced to match the lips
    assert -15 <= delayed.offset <= -10, delayed
    row = report.row("Sync-C")
    assert row.status == "ok" and row.detail["videos"] == 2
    assert row.value == pytest.approx((orig.sync_c + delayed.sync_c) / 2)


def test_sync_without_weights_is_unavailable_with_the_reason(clips):
    report = run_eval(clips, None, Weights(), EvalConfig(metrics=("sync",), device="cpu"))
    for metric in ("Sync-C", "Sync-D", "AV offset"):
        row = report.row(metric)
        assert row.status == "unavailable" and row.value is None
        assert "syncnet" in row.reason and "--syncnet" in row.reason
