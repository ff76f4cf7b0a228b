"""FVD: the Fréchet distance between I3D features of 16-frame clips of generated and reference videos.

Features come from `i3d_torchscript.pt` (`vividhead.models.i3d`): the 400-d logits before the softmax.
Two protocols, named after the code whose numbers they reproduce:

- `stylegan-v` (default): StyleGAN-V's `calc_metrics_for_dataset.py`, which talking-head and video
  papers run on folders of videos. One 16-frame clip per video: from a random start in each reference
  video (drawn from `seed`), the first 16 frames of each generated video. Clips go to the detector as
  uint8 values with `rescale=True, resize=True`: the network itself squashes every frame to 224x224
  (no crop) and scales to [-1, 1]. The covariance divides by N (`FeatureStats.get_mean_cov`).
- `fvd-comparison`: universome/fvd-comparison as copied into common_metrics_on_video_quality
  (`fvd/styleganv/fvd.py`): every non-overlapping 16-frame clip from the start of each video
  (`clips_per_video`, 0 = all), the short side resized to 224 (bilinear) and centre-cropped, scaled to
  [-1, 1] here, `rescale=False, resize=False`; the covariance divides by N - 1 (`np.cov`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividhead.evaluation.videos import sample_clips
from vividhead.models.i3d import CLIP_FRAMES, I3DFeatures, load_i3d

FVD_PROTOCOLS = ("stylegan-v", "fvd-comparison")
DEFAULT_FVD_PROTOCOL = "stylegan-v"


@dataclass(frozen=True)
class FVDConfig:
    """How FVD cuts clips and batches them."""

    protocol: str = DEFAULT_FVD_PROTOCOL
    clip_frames: int = CLIP_FRAMES
    clips_per_video: int = 0    # fvd-comparison: non-overlapping clips per video, 0 = all
    seed: int = 0               # stylegan-v: the start of each reference clip
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.protocol not in FVD_PROTOCOLS:
            raise ValueError(f"unknown FVD protocol {self.protocol!r}; choose from {', '.join(FVD_PROTOCOLS)}")

    @property
    def covariance_ddof(self) -> int:
        """0: divide by N (StyleGAN-V); 1: divide by N - 1 (np.cov)."""
        return 0 if self.protocol == "stylegan-v" else 1


def stylegan_v_input(clips: np.ndarray) -> torch.Tensor:
    """[B, T, H, W, 3] uint8 -> the [B, 3, T, H, W] float 0..255 tensor StyleGAN-V gives its detector."""
    return torch.from_numpy(np.ascontiguousarray(clips)).permute(0, 4, 1, 2, 3).float()


class FVDFeatures:
    """I3D features of the clips of each video, cut and preprocessed as the protocol says."""

    def __init__(self, weights: Path, device: torch.device, config: FVDConfig = FVDConfig()) -> None:
        self.model: I3DFeatures = load_i3d(weights, device)
        self.config = config
        self.rng = np.random.default_rng(config.seed)

    def clips(self, n_frames: int, reference: bool) -> list[slice]:
        """The clips one video contributes (none when it is shorter than a clip)."""
        length = self.config.clip_frames
        if self.config.protocol == "fvd-comparison":
            return sample_clips(n_frames, length, self.config.clips_per_video)
        if n_frames < length:
            return []
        start = int(self.rng.integers(0, n_frames - length + 1)) if reference else 0
        return [slice(start, start + length)]

    @torch.no_grad()
    def clip_features(self, clips: np.ndarray) -> np.ndarray:
        """[B, T, H, W, 3] uint8 clips -> [B, D] float64 features under the protocol's preprocessing."""
        if self.config.protocol == "fvd-comparison":
            return self.model.features(torch.from_numpy(clips)).double().numpy()
        x = stylegan_v_input(clips).to(self.model.device)
        out = self.model.module(x, rescale=True, resize=True, return_features=True)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != len(clips):
            raise ValueError(f"I3D returned {type(out).__name__} {getattr(out, 'shape', '')}; expected [B, D] features")
        return out.double().cpu().numpy()

    def video_features(self, frames: np.ndarray, reference: bool = False) -> np.ndarray:
        """frames [T, H, W, 3] uint8 -> [n_clips, D] float64 (no rows when T < clip_frames)."""
        clips = self.clips(len(frames), reference)
        out = []
        for start in range(0, len(clips), self.config.batch_size):
            out.append(self.clip_features(np.stack([frames[s] for s in clips[start:start + self.config.batch_size]])))
        return np.concatenate(out) if out else np.empty((0, 0))

