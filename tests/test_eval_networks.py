"""FID Inception-v3 and FVD I3D: loaded from files in the real weight formats, through the real loaders.

The Inception file is a full-size random FID Inception-v3 saved as a plain state dict with the key names
of `pt_inception-2015-12-05-6726825d.pth` (no BatchNorm step counters, as in that file). The I3D file is
a tiny TorchScript network with the calling convention of `i3d_torchscript.pt`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vividhead.evaluation.fid import FIDConfig, FIDFeatures
from vividhead.evaluation.frechet import frechet_distance_features
from vividhead.evaluation.fvd import FVDConfig, FVDFeatures
from vividhead.models.i3d import load_i3d, preprocess_clips
from vividhead.models.inception import FIDInceptionV3, load_fid_inception


def write_fid_inception(path: Path, seed: int = 0) -> Path:
    """A random FID Inception-v3 in the format of pt_inception-2015-12-05-6726825d.pth."""
    torch.manual_seed(seed)
    model = FIDInceptionV3()
    # BatchNorm statistics calibrated on a few synthetic images: a raw random Inception's activations
    # vanish over its 11 blocks (pool features ~1e-8), which would make every distance ~0.
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None
    model.train()
    model.features(torch.from_numpy(_faces(4, seed=seed + 100)).permute(0, 3, 1, 2).float() / 255)
    model.eval()
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    return path


class TinyI3D(nn.Module):
    """A tiny video network with the forward signature of i3d_torchscript.pt (400-d logits as features)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, kernel_size=(3, 7, 7), stride=(1, 4, 4), padding=(1, 3, 3))
        self.logits = nn.Linear(16, 400)

    def forward(self, x: torch.Tensor, rescale: bool = False, resize: bool = False,
                return_features: bool = False) -> torch.Tensor:
        if rescale:
            x = x / 127.5 - 1.0
        if resize:
            x = F.interpolate(x, size=(x.shape[2], 224, 224), mode="trilinear", align_corners=False)
        h = torch.relu(self.conv(x))
        pooled = torch.cat([h.mean(dim=(2, 3, 4)), h.amax(dim=(2, 3, 4))], dim=1)
        logits = self.logits(pooled)
        return logits if return_features else torch.softmax(logits, dim=1)


def write_tiny_i3d(path: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    torch.jit.script(TinyI3D().eval()).save(str(path))
    return path


def eval_weights(tmp_path_factory) -> dict[str, Path]:
    """The tiny FID Inception and I3D files, written once per test session and shared by the eval tests."""
    folder = tmp_path_factory.getbasetemp() / "eval weights"
    paths = {"inception": folder / "pt_inception-2015-12-05-6726825d.pth", "i3d": folder / "i3d_torchscript.pt"}
    if not all(p.is_file() for p in paths.values()):
        folder.mkdir(exist_ok=True)
        write_fid_inception(folder / ".inception.tmp").replace(paths["inception"])
        write_tiny_i3d(folder / ".i3d.tmp").replace(paths["i3d"])
    return paths


@pytest.fixture(scope="session")
def inception_file(tmp_path_factory) -> Path:
    return eval_weights(tmp_path_factory)["inception"]


@pytest.fixture(scope="session")
def i3d_file(tmp_path_factory) -> Path:
    return eval_weights(tmp_path_factory)["i3d"]


def _faces(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth synthetic images (blobs on gradients) as [n, H, W, 3] uint8."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = []
    for _ in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        blob = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r).astype(float)
        colour = rng.uniform(0, 1, 3)
        img = 0.5 * np.stack([xx, yy, 1 - xx], -1) + 0.5 * blob[..., None] * colour
        out.append((img * 255).astype(np.uint8))
    return np.stack(out)


def test_inception_loads_the_real_key_names_and_gives_pool_features(inception_file):
    model = load_fid_inception(inception_file)
    state = torch.load(inception_file, weights_only=True)
    assert "Mixed_7c.branch_pool.conv.weight" in state and state["fc.weight"].shape == (1008, 2048)
    torch.testing.assert_close(model.state_dict()["Mixed_6e.branch7x7dbl_5.bn.running_var"],
                               state["Mixed_6e.branch7x7dbl_5.bn.running_var"])
    images = torch.from_numpy(_faces(2)).permute(0, 3, 1, 2).float() / 255
    feats = model.features(images)
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all() and (feats >= 0).all()
    assert not torch.allclose(feats[0], feats[1])


def test_inception_loader_names_missing_keys(tmp_path, inception_file):
    state = torch.load(inception_file, weights_only=True)
    del state["Mixed_5b.branch1x1.conv.weight"]
    broken = tmp_path / "broken.pth"
    torch.save(state, broken)
    with pytest.raises(ValueError, match="Mixed_5b.branch1x1.conv.weight"):
        load_fid_inception(broken)
    with pytest.raises(FileNotFoundError, match="pt_inception"):
        load_fid_inception(tmp_path / "absent.pth")


def test_fid_through_inception_zero_for_same_frames_and_monotone_in_noise(inception_file):
    torch.set_num_threads(2)
    fid = FIDFeatures(inception_file, torch.device("cpu"), FIDConfig(batch_size=8))
    frames = _faces(5)
    ref = fid.video_features(frames)
    assert ref.shape == (5, 2048)
    assert frechet_distance_features(ref, fid.video_features(frames.copy())) == 0.0
    rng = np.random.default_rng(5)
    noise = rng.standard_normal(frames.shape)
    scores = []
    for level in (16.0, 96.0):
        noisy = np.clip(frames + level * noise, 0, 255).astype(np.uint8)
        scores.append(frechet_distance_features(ref, fid.video_features(noisy)))
    assert 0 < scores[0] < scores[1], scores


def test_fid_samples_frames_evenly(inception_file):
    fid = FIDFeatures(inception_file, torch.device("cpu"), FIDConfig(frames_per_video=2))
    assert fid.video_features(_faces(6)).shape == (2, 2048)


def test_i3d_preprocessing_matches_reference_geometry():
    clips = torch.full((1, 16, 100, 200, 3), 255, dtype=torch.uint8)
    x = preprocess_clips(clips)
    assert x.shape == (1, 3, 16, 224, 224)
    torch.testing.assert_close(x, torch.ones_like(x))    # [0, 255] -> [-1, 1]


def test_fvd_from_torchscript_i3d(i3d_file):
    fvd = FVDFeatures(i3d_file, torch.device("cpu"), FVDConfig("fvd-comparison"))
    rng = np.random.default_rng(0)
    video = np.repeat(_faces(40, size=48), 1, axis=0)
    feats = fvd.video_features(video)
    assert feats.shape == (2, 400)                        # 40 frames -> two 16-frame clips
    assert fvd.video_features(video[:15]).shape[0] == 0   # too short for one clip
    videos = [_faces(32, size=48, seed=s) for s in range(4)]
    ref = np.concatenate([fvd.video_features(v) for v in videos])
    same = np.concatenate([fvd.video_features(v.copy()) for v in videos])
    assert frechet_distance_features(ref, same) == 0.0
    scores = []
    for level in (10.0, 40.0, 120.0):
        noisy = [np.clip(v + level * rng.standard_normal(v.shape), 0, 255).astype(np.uint8) for v in videos]
        scores.append(frechet_distance_features(ref, np.concatenate([fvd.video_features(v) for v in noisy])))
    assert 0 < scores[0] < scores[1] < scores[2], scores


def test_i3d_loader_rejects_a_state_dict(tmp_path):
    path = tmp_path / "rgb_imagenet.pt"
    torch.save({"w": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="TorchScript"):
        load_i3d(path)
