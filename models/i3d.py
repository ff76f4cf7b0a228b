"""I3D video features for FVD, from the TorchScript file the FVD literature uses (`i3d_torchscript.pt`).

StyleGAN-V, DIGAN and most talking-head papers compute FVD with `i3d_torchscript.pt`: the Kinetics-400
RGB I3D of the original TensorFlow FVD, exported to TorchScript. Its forward takes
`(videos, rescale: bool, resize: bool, return_features: bool)` with videos [B, 3, T, 224, 224];
called with `rescale=False, resize=False, return_features=True` on videos in [-1, 1] it returns the
400-d logits before the softmax, which FVD compares. The file is loaded with `torch.jit.load`, so no
network code is needed here; this module does the preprocessing of the reference implementation
(resize the shorter side to 224, bilinear; centre crop; scale [0, 1] -> [-1, 1]).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from vividhead.weights_verify import verify_weights

CLIP_FRAMES = 16
INPUT_SIZE = 224
WEIGHTS_FILE = "i3d_torchscript.pt"


def preprocess_clips(clips: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """[B, T, H, W, 3] uint8 (or float in [0, 1]) -> [B, 3, T, size, size] in [-1, 1]."""
    if clips.ndim != 5 or clips.shape[-1] != 3:
        raise ValueError(f"clips must be [B, T, H, W, 3], got shape {tuple(clips.shape)}")
    x = clips.float() / 255.0 if clips.dtype == torch.uint8 else clips.float()
    b, t, h, w, _ = x.shape
    x = x.permute(0, 1, 4, 2, 3).reshape(b * t, 3, h, w)
    scale = size / min(h, w)
    target = (size, math.ceil(w * scale)) if h <= w else (math.ceil(h * scale), size)
    x = F.interpolate(x, size=target, mode="bilinear", align_corners=False)
    top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
    x = x[:, :, top:top + size, left:left + size]
    x = x.reshape(b, t, 3, size, size).permute(0, 2, 1, 3, 4)
    return (x - 0.5) * 2.0


class I3DFeatures:
    """An I3D TorchScript module with the FVD calling convention; `features` gives [B, 400]."""

    def __init__(self, module: torch.jit.ScriptModule, device: torch.device | str = "cpu") -> None:
        self.module = module.eval().to(device)
        self.device = torch.device(device)

    @torch.no_grad()
    def features(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, T, H, W, 3] uint8 clips -> [B, D] features (D = 400 for the Kinetics-400 I3D)."""
        x = preprocess_clips(clips).to(self.device)
        out = self.module(x, rescale=False, resize=False, return_features=True)
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ValueError(f"I3D returned {type(out).__name__} {getattr(out, 'shape', '')}; expected [B, D] features")
        return out.float().cpu()


def load_i3d(path: Path, device: torch.device | str = "cpu") -> I3DFeatures:
    """Load `i3d_torchscript.pt` (TorchScript); errors name the file and the expected format."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"I3D weights not found: {path} (expected the TorchScript {WEIGHTS_FILE})")
    verify_weights("i3d", path)   # lock record; a TorchScript archive
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError) as error:
        raise ValueError(f"{path}: not a TorchScript file ({WEIGHTS_FILE} format expected): {error}") from error
    return I3DFeatures(module, device)
