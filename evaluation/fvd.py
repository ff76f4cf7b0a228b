"""FVD: the Fréchet distance between I3D features of 16-frame clips of generated and reference videos.

Each video contributes its consecutive non-overlapping 16-frame clips from the start
(`clips_per_video`, 0 = all). Features come from `i3d_torchscript.pt` (`vividhead.models.i3d`), with
the preprocessing of the reference FVD code (224 px, centre crop, [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vividhead.evaluation.videos import sample_clips
from vividhead.models.i3d import CLIP_FRAMES, I3DFeatures, load_i3d


@dataclass(frozen=True)
class FVDConfig:
    """How FVD cuts clips and batches them."""

    clip_frames: int = CLIP_FRAMES
    clips_per_video: int = 0    # 0 = every non-overlapping clip
    batch_size: int = 4


class FVDFeatures:
    """I3D features of the 16-frame clips of each video."""

    def __init__(self, weights: Path, device: torch.device, config: FVDConfig = FVDConfig()) -> None:
        self.model: I3DFeatures = load_i3d(weights, device)
        self.config = config

    def video_features(self, frames: np.ndarray) -> np.ndarray:
        """frames [T, H, W, 3] uint8 -> [n_clips, D] float64 (no rows when T < clip_frames)."""
        clips = sample_clips(len(frames), self.config.clip_frames, self.config.clips_per_video)
        out = []
        for start in range(0, len(clips), self.config.batch_size):
            batch = np.stack([frames[s] for s in clips[start:start + self.config.batch_size]])
            out.append(self.model.features(torch.from_numpy(batch)).double().numpy())
        return np.concatenate(out) if out else np.empty((0, 0))
