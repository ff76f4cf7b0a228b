"""Unit tests of the filter stages' pieces: configs, registry, SyncNet scoring maths, the sync proxy, occlusion geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from tiny_models import write_tiny_syncnet
from vividhead.models import syncnet as sn
from vividhead.models.pose import Hands
from vividhead.pipelines.filter_config import AnnotateConfig, OcclusionConfig, SpeechConfig, SyncConfig
from vividhead.pipelines.occlusion import points_in_box
from vividhead.pipelines.stages import STAGES
from vividhead.pipelines.sync import shift_audio
from vividhead.weights import Weights

CLIP_STAGES = {stage.name: stage.model for stage in STAGES if stage.model}   # the model stages, in table order

CONFIGS = {"occlusion": OcclusionConfig, "speech": SpeechConfig, "sync": SyncConfig, "annotate": AnnotateConfig}


# ------------------------------------------------------------------------------ configs and registry
def test_sync_defaults_follow_latentsync_and_unknown_fields_are_rejected():
    c = SyncConfig()
    assert (c.min_confidence, c.max_abs_offset, c.max_search_offset) == (3.0, 6, 15)
    with pytest.raises(ValidationError, match="min_conf"):
        SyncConfig(min_conf=3)
    with pytest.raises(ValidationError):
        SpeechConfig(min_speech_ratio=1.5)


def test_registry_is_in_pipeline_order_and_declares_metrics():
    assert list(CLIP_STAGES) == ["occlusion", "speech", "sync", "annotate"]
    for name, cls in CLIP_STAGES.items():
        assert cls.name == name
        assert cls.metric_types and set(cls.metric_types.values()) <= {"float", "int", "str", "bool"}
    assert {"lse_c", "lse_d", "offset", "verdict", "verified", "proxy_lag", "proxy_z"} <= set(CLIP_STAGES["sync"].metric_types)


def test_modes_without_weights_with_missing_paths_and_disabled(tmp_path):
    missing = tmp_path / "nowhere" / "syncnet_v2.model"
    weights = Weights(syncnet=missing, dwpose_det=missing, wav2vec2=missing)
    for name, cls in CLIP_STAGES.items():
        stage = cls(CONFIGS[name](), weights)
        assert stage.mode() == "default", name
        assert cls(CONFIGS[name](enabled=False), weights).mode() == "skipped"
    sync = CLIP_STAGES["sync"](SyncConfig(), weights)
    assert str(missing) in sync.reason() and "proxy" in sync.reason()
    assert "does not exist" in CLIP_STAGES["annotate"](AnnotateConfig(), weights).reason()


def test_stages_report_weights_mode_when_files_exist(tmp_path):
    path = write_tiny_syncnet(tmp_path / "syncnet_v2.model")
    assert CLIP_STAGES["sync"](SyncConfig(), Weights(syncnet=path)).mode() == "weights"
    # DWpose needs both the detector and the pose model
    assert CLIP_STAGES["occlusion"](OcclusionConfig(), Weights(dwpose_det=path)).mode() == "default"


# ------------------------------------------------------------------------------------------ SyncNet
def test_syncnet_loads_original_keys_and_rejects_others(tmp_path):
    path = write_tiny_syncnet(tmp_path / "syncnet_v2.model")
    state = torch.load(path, weights_only=True)
    assert "netcnnlip.0.weight" in state and "netfcaud.3.bias" in state and len(state) == 88
    model = sn.load_syncnet(path, torch.device("cpu"))
    assert torch.equal(model.netcnnaud[0].weight, state["netcnnaud.0.weight"])

    renamed = {k.replace("netcnnaud", "audio"): v for k, v in state.items()}
    torch.save(renamed, tmp_path / "renamed.model")
    with pytest.raises(ValueError, match="renamed.model.*missing"):
        sn.load_syncnet(tmp_path / "renamed.model")
    (tmp_path / "garbage.model").write_bytes(b"not a state dict")
    with pytest.raises(ValueError, match="garbage.model.*unreadable"):
        sn.load_syncnet(tmp_path / "garbage.model")
    with pytest.raises(FileNotFoundError, match="absent.model"):
        sn.load_syncnet(tmp_path / "absent.model")


def _reference_pdist(lip: torch.Tensor, aud: torch.Tensor, vshift: int) -> torch.Tensor:
    """The reference tool's calc_pdist + mean, written as its loop."""
    padded = torch.nn.functional.pad(aud, (0, 0, vshift, vshift))
    dists = [torch.nn.functional.pairwise_distance(lip[[i], :].repeat(2 * vshift + 1, 1), padded[i:i + 2 * vshift + 1])
             for i in range(len(lip))]
    return torch.mean(torch.stack(dists, 1), 1)


def test_offset_scores_match_the_reference_loop_and_sign():
    gen = torch.Generator().manual_seed(0)
    lip = torch.randn(60, 16, generator=gen)
    aud = torch.randn(60, 16, generator=gen)
    mean = _reference_pdist(lip, aud, 15)
    score = sn.offset_scores(lip, aud, 15)
    assert np.allclose(score.mean_dists, mean.numpy(), atol=1e-5)
    assert score.lse_d == pytest.approx(float(mean.min()), abs=1e-5)
    assert score.lse_c == pytest.approx(float(mean.median() - mean.min()), abs=1e-5)

    # audio delayed by 4 frames: video frame i matches audio window i + 4 -> offset -4
    base = torch.randn(80, 16, generator=gen)
    delayed = sn.offset_scores(base[10:70], base[6:66], 15)
    assert delayed.offset == -4 and delayed.lse_c > 1.0


def test_score_sync_runs_batched_on_frames_audio_and_a_partial_track(tmp_path):
    model = sn.load_syncnet(write_tiny_syncnet(tmp_path / "s.model"), torch.device("cpu"))
    frames = np.random.default_rng(0).integers(0, 255, (14, 128, 128, 3), dtype=np.uint8)
    boxes = np.tile([32.0, 32.0, 96.0, 96.0], (14, 1))
    boxes[3:6] = np.nan                                   # missing detections are interpolated
    audio = np.random.default_rng(1).normal(0, 0.1, 14 * 640).astype(np.float32)
    score = sn.score_sync(model, iter(frames), audio, boxes, vshift=3, batch_size=4)
    assert score.n_windows == 14 - 5 and len(score.mean_dists) == 7
    assert np.isfinite([score.lse_d, score.lse_c]).all() and -3 <= score.offset <= 3
    assert sn.score_sync(model, iter(frames), audio, np.full((14, 4), np.nan)) is None


def test_reference_crop_keeps_the_mouth_in_the_lower_half():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[140:150, 90:110] = 255                           # a bright "mouth" low in the face box
    crop = sn.crop_face(frame, 100.0, 100.0, 50.0)
    assert crop.shape == (224, 224, 3)
    rows = np.nonzero(crop[..., 0] > 128)[0]
    assert rows.min() > 112


def test_shift_audio_keeps_length():
    audio = np.arange(640 * 10, dtype=np.float32)
    assert np.array_equal(shift_audio(audio, 2)[1280:], audio[:-1280])
    assert np.array_equal(shift_audio(audio, -2)[:-1280], audio[1280:])
    assert len(shift_audio(audio, 3)) == len(audio)


# ---------------------------------------------------------------------------------------- occlusion
def test_points_in_box_counts_confident_points_inside():
    hands = Hands(np.array([[50, 50], [55, 60], [10, 10], [52, 52]], np.float32), np.array([0.9, 0.9, 0.9, 0.1], np.float32))
    box = np.array([40.0, 40.0, 80.0, 80.0])
    assert points_in_box(hands, box, 0.3, 0.0) == 2
    assert points_in_box(hands, box, 0.05, 0.0) == 3
    assert points_in_box(hands, box, 0.3, 0.8) == 3          # a grown box reaches (10, 10)
    assert points_in_box(hands, np.full(4, np.nan), 0.3, 0.0) == 0
