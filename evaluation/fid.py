"""FID: the Fréchet distance between Inception-v3 pool features of generated and reference frames.

Frames are sampled per video (`frames_per_video` evenly spaced, 0 = every frame) and passed through
the FID Inception-v3 (`vividhead.models.inception`, weights `pt_inception-2015-12-05-6726825d.pth`).
One protocol, `pytorch-fid`: that package's preprocessing (bilinear resize to 299, [-1, 1]) and its
unbiased covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividhead.evaluation.videos import sample_frames
from vividhead.models.inception import FIDInceptionV3, load_fid_inception

FID_PROTOCOLS = ("pytorch-fid",)


@dataclass(frozen=True)
class FIDConfig:
    """How FID samples frames and batches them."""

    protocol: str = FID_PROTOCOLS[0]
    frames_per_video: int = 0   # evenly spaced frames per video; 0 = every frame
    batch_size: int = 32

    def __post_init__(self) -> None:
        if self.protocol not in FID_PROTOCOLS:
            raise ValueError(f"unknown FID protocol {self.protocol!r}; choose from {', '.join(FID_PROTOCOLS)}")


class FIDFeatures:
    """Inception pool features of the sampled frames of each video."""

    def __init__(self, weights: Path, device: torch.device, config: FIDConfig = FIDConfig()) -> None:
        self.model: FIDInceptionV3 = load_fid_inception(weights, device)
        self.device = device
        self.config = config

    def video_features(self, frames: np.ndarray) -> np.ndarray:
        """frames [T, H, W, 3] uint8 -> [n_sampled, 2048] float64."""
        chosen = frames[sample_frames(len(frames), self.config.frames_per_video)]
        out = []
        for start in range(0, len(chosen), self.config.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chosen[start:start + self.config.batch_size]))
            images = batch.permute(0, 3, 1, 2).float().div(255.0).to(self.device)
            out.append(self.model.features(images).double().cpu().numpy())
        return np.concatenate(out)
