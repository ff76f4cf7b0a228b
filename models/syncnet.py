"""SyncNet (Chung & Zisserman 2016) and its reference lip-sync scoring (LSE-D, LSE-C, AV offset).

The network matches the original `syncnet_v2.model` state dict key for key, so the released
file loads unchanged. Scoring follows the reference tool, batched and in memory:

- the face of each frame is cropped as the reference pipeline crops it (box median-smoothed over
  13 frames, crop scale 0.4, grey padding 110) and resized to 224x224, BGR, raw 0..255 values;
- audio is 13 MFCCs at 100 Hz (python_speech_features, on int16-scaled samples); video frame i
  takes MFCC columns [4i, 4i + 20) and the mouth window is frames [i, i + 5);
- for offsets -vshift..+vshift the mean embedding distance over the clip is taken;
  LSE-D = the minimum, LSE-C = median - minimum, offset = vshift - argmin.

`score_sync(model, frames_rgb, audio_16k, face_boxes)` scores any video; the eval engineer calls it too.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from vividhead.weights_verify import verify_file

SAMPLE_RATE = 16000
FPS = 25
CROP_SIZE = 224
CROP_SCALE = 0.4        # reference run_pipeline.py --crop_scale
SMOOTH_KERNEL = 13      # reference median filter over the face track
PAD_VALUE = 110         # reference padding grey
MFCC_PER_FRAME = 4      # 100 Hz MFCC / 25 fps
MFCC_WINDOW = 20        # MFCC columns per 5-frame window
VIDEO_WINDOW = 5


def _conv2d_block(cin: int, cout: int, kernel: tuple[int, int], padding: tuple[int, int]) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride=1, padding=padding), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def _conv3d_block(cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int],
                  padding: tuple[int, int, int]) -> list[nn.Module]:
    return [nn.Conv3d(cin, cout, kernel, stride=stride, padding=padding), nn.BatchNorm3d(cout), nn.ReLU(inplace=True)]


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, dim))


class SyncNet(nn.Module):
    """The SyncNet v2 'S' network. Module names and indices are those of the original state dict."""

    def __init__(self, embed_dim: int = 1024) -> None:
        super().__init__()
        # audio: [N, 1, 13, 20] MFCC -> [N, 512, 1, 1]
        self.netcnnaud = nn.Sequential(
            *_conv2d_block(1, 64, (3, 3), (1, 1)), nn.MaxPool2d(1, 1),                       # 0-3
            *_conv2d_block(64, 192, (3, 3), (1, 1)), nn.MaxPool2d((3, 3), stride=(1, 2)),    # 4-7
            *_conv2d_block(192, 384, (3, 3), (1, 1)),                                        # 8-10
            *_conv2d_block(384, 256, (3, 3), (1, 1)),                                        # 11-13
            *_conv2d_block(256, 256, (3, 3), (1, 1)), nn.MaxPool2d((3, 3), stride=(2, 2)),   # 14-17
            *_conv2d_block(256, 512, (5, 4), (0, 0)),                                        # 18-20
        )
        self.netfcaud = _head(embed_dim)
        self.netfclip = _head(embed_dim)
        # video: [N, 3, 5, 224, 224] BGR 0..255 -> [N, 512, 1, 1, 1]
        self.netcnnlip = nn.Sequential(
            *_conv3d_block(3, 96, (5, 7, 7), (1, 2, 2), (0, 0, 0)),                          # 0-2
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),                                       # 3
            *_conv3d_block(96, 256, (1, 5, 5), (1, 2, 2), (0, 1, 1)),                        # 4-6
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),                    # 7
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),                       # 8-10
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),                       # 11-13
            *_conv3d_block(256, 256, (1, 3, 3), (1, 1, 1), (0, 1, 1)),                       # 14-16
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),                                       # 17
            *_conv3d_block(256, 512, (1, 6, 6), (1, 1, 1), (0, 0, 0)),                       # 18-20
        )

    def forward_aud(self, mfcc: torch.Tensor) -> torch.Tensor:
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def forward_lip(self, video: torch.Tensor) -> torch.Tensor:
        return self.netfclip(self.netcnnlip(video).flatten(1))


def choose_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_syncnet(path: Path, device: torch.device | None = None) -> SyncNet:
    """Load an original `syncnet_v2.model` state dict; errors name the file and the bad keys."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet weights {path} do not exist (expected the original syncnet_v2.model)")
    verify_file("syncnet", path)   # against its lock record (the keys are checked below)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is the same user error
        raise ValueError(f"SyncNet weights {path} are unreadable as a torch state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ValueError(f"SyncNet weights {path}: expected a state dict, got {type(state).__name__}")
    model = SyncNet()
    own = model.state_dict()
    unexpected = sorted(set(state) - set(own))
    missing = sorted(k for k in set(own) - set(state) if not k.endswith("num_batches_tracked"))
    if unexpected or missing:
        raise ValueError(f"SyncNet weights {path} do not match syncnet_v2 keys: "
                         f"missing {missing[:5]}, unexpected {unexpected[:5]}")
    for name, value in state.items():
        if own[name].shape != value.shape:
            raise ValueError(f"SyncNet weights {path}: {name} has shape {tuple(value.shape)}, "
                             f"expected {tuple(own[name].shape)}")
    model.load_state_dict(state, strict=False)
    return model.to(device or choose_device()).eval()


# ------------------------------------------------------------------------------------ preprocessing
def fill_track(boxes: np.ndarray) -> np.ndarray | None:
    """Interpolate NaN rows of a [n, 4] face track (edges take the nearest box); None if no box at all."""
    boxes = np.asarray(boxes, dtype=np.float64)
    valid = ~np.isnan(boxes).any(axis=1)
    if not valid.any():
        return None
    idx = np.arange(len(boxes))
    return np.stack([np.interp(idx, idx[valid], boxes[valid, k]) for k in range(4)], axis=1)


def crop_params(boxes: np.ndarray) -> np.ndarray:
    """Per frame (centre x, centre y, half size), median-smoothed as the reference pipeline does."""
    from scipy.signal import medfilt

    size = np.maximum(boxes[:, 3] - boxes[:, 1], boxes[:, 2] - boxes[:, 0]) / 2
    cx = (boxes[:, 0] + boxes[:, 2]) / 2
    cy = (boxes[:, 1] + boxes[:, 3]) / 2
    kernel = min(SMOOTH_KERNEL, len(boxes) if len(boxes) % 2 else len(boxes) - 1)
    if kernel >= 3:
        size, cx, cy = (medfilt(v, kernel_size=kernel) for v in (size, cx, cy))
    return np.stack([cx, cy, size], axis=1)


def crop_face(frame_rgb: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    """The reference 224x224 BGR face crop (mouth in the lower half) of one frame."""
    pad = int(half * (1 + 2 * CROP_SCALE))
    bgr = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    padded = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(PAD_VALUE,) * 3)
    my, mx = cy + pad, cx + pad
    face = padded[int(my - half): int(my + half * (1 + 2 * CROP_SCALE)),
                  int(mx - half * (1 + CROP_SCALE)): int(mx + half * (1 + CROP_SCALE))]
    return cv2.resize(face, (CROP_SIZE, CROP_SIZE))


def crop_faces(frames_rgb: Iterable[np.ndarray], face_boxes: np.ndarray) -> np.ndarray | None:
    """Reference crops of every frame, uint8 [n, 224, 224, 3] BGR; None when the track has no face."""
    boxes = fill_track(face_boxes)
    if boxes is None:
        return None
    params = crop_params(boxes)
    crops = [crop_face(frame, *params[i]) for i, frame in zip(range(len(params)), frames_rgb, strict=False)]
    return np.stack(crops) if crops else None


def mfcc(audio_16k: np.ndarray) -> np.ndarray:
    """13 MFCCs at 100 Hz, [13, T], computed on int16-scaled samples like the reference."""
    import python_speech_features

    samples = np.asarray(audio_16k, dtype=np.float64) * 32768.0
    return python_speech_features.mfcc(samples, SAMPLE_RATE).T


# ------------------------------------------------------------------------------------------ scoring
@dataclass(frozen=True)
class SyncScore:
    """SyncNet scores of one video. offset > 0: the audio must be delayed by that many frames to match."""

    lse_d: float                 # minimum over offsets of the mean distance (lower is better)
    lse_c: float                 # median - minimum of the mean distances (higher is better)
    offset: int                  # vshift - argmin, in 25 fps frames
    n_windows: int
    mean_dists: np.ndarray       # [2 * vshift + 1] mean distance per candidate offset


@torch.inference_mode()
def embed(model: SyncNet, crops_bgr: np.ndarray, audio_16k: np.ndarray, batch_size: int = 64
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lip and audio embeddings of every 5-frame window: two [n_windows, 1024] tensors.

    As in the reference, the windows are min(video frames, audio samples // 640) - 5.
    """
    device = next(model.parameters()).device
    mfcc_13 = mfcc(audio_16k)
    n_windows = min(len(crops_bgr), len(audio_16k) // (SAMPLE_RATE // FPS)) - VIDEO_WINDOW
    if n_windows < 1:
        raise ValueError(f"too short for SyncNet: {len(crops_bgr)} frames, {len(audio_16k)} audio samples")
    video = torch.from_numpy(crops_bgr).permute(3, 0, 1, 2)          # [3, n, 224, 224] uint8
    audio = torch.from_numpy(mfcc_13.astype(np.float32))             # [13, T]
    lips, auds = [], []
    for start in range(0, n_windows, batch_size):
        idx = range(start, min(n_windows, start + batch_size))
        v = torch.stack([video[:, i: i + VIDEO_WINDOW] for i in idx]).to(device, torch.float32)
        a = torch.stack([audio[None, :, i * MFCC_PER_FRAME: i * MFCC_PER_FRAME + MFCC_WINDOW] for i in idx])
        lips.append(model.forward_lip(v).float().cpu())
        auds.append(model.forward_aud(a.to(device)).float().cpu())
    return torch.cat(lips), torch.cat(auds)


def offset_scores(lip: torch.Tensor, aud: torch.Tensor, vshift: int = 15) -> SyncScore:
    """LSE-D, LSE-C and offset from window embeddings, exactly as the reference `calc_pdist` does."""
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))               # [n + 2v, D]
    windows = padded.unfold(0, 2 * vshift + 1, 1).permute(0, 2, 1)[: len(lip)]   # [n, 2v+1, D]
    dists = torch.nn.functional.pairwise_distance(lip[:, None, :].expand_as(windows), windows)
    mean = dists.mean(dim=0)                                                     # [2v+1]
    minval, minidx = torch.min(mean, 0)
    return SyncScore(
        lse_d=float(minval),
        lse_c=float(torch.median(mean) - minval),
        offset=int(vshift - int(minidx)),
        n_windows=len(lip),
        mean_dists=mean.numpy(),
    )


def score_sync(model: SyncNet, frames_rgb: Iterable[np.ndarray], audio_16k: np.ndarray, face_boxes: np.ndarray,
               vshift: int = 15, batch_size: int = 64) -> SyncScore | None:
    """Score any 25 fps video: RGB frames, 16 kHz mono float audio, [n, 4] face boxes (NaN = no face).

    Returns None when the track holds no face at all.
    """
    crops = crop_faces(frames_rgb, face_boxes)
    if crops is None:
        return None
    lip, aud = embed(model, crops, audio_16k, batch_size)
    return offset_scores(lip, aud, vshift)
