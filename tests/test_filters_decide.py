"""The filter stages' pure decisions: `decide` is what each stage's process() applies to the metrics it
records, and what `inspect --what-if` re-applies to the stored metrics (tests/test_inspect_whatif.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vividhead.models.pose import Hands
from vividhead.models.vad import SpeechSegments
from vividhead.pipelines import occlusion, speech, sync
from vividhead.pipelines.filter_config import OcclusionConfig, SpeechConfig, SyncConfig
from vividhead.pipelines.records import Clip, Source

N_FRAMES = 50
BOX = (100.0, 100.0, 300.0, 300.0)


def make_clip() -> Clip:
    return Clip(key="decide", source=Source(source_id="decide", uri="unused.mp4"), start=0.0, end=N_FRAMES / 25,
                n_frames=N_FRAMES, video_path="unused.mp4", wav_path="unused.wav",
                face_track=np.tile(np.asarray(BOX, np.float32), (N_FRAMES, 1)))


def outcome(result) -> tuple[str, str] | None:
    return None if result.reject is None else (result.reject, result.detail)


# ------------------------------------------------------------------------------------- the rules
def test_speech_rejects_below_the_ratio_and_decides_nothing_without_a_metric() -> None:
    config = SpeechConfig(min_speech_ratio=0.5)
    assert speech.decide({"speech_ratio": 0.49}, config) == (
        "no_speech", "speech covers 49% of the clip, below speech.min_speech_ratio=0.5")
    assert speech.decide({"speech_ratio": 0.5}, config) is None
    assert speech.decide({"speech_ratio": None}, config) is None and speech.decide({}, config) is None
    assert speech.decide({"speech_ratio": float("nan")}, config) is None
    assert speech.decide({"speech_ratio": 0.1}, SpeechConfig(enabled=False)) is None


def test_occlusion_rejects_above_the_ratio() -> None:
    config = OcclusionConfig(max_occluded_ratio=0.2)
    assert occlusion.decide({"occluded_ratio": 0.3, "first_occluded": 1.25}, config) == (
        "hand_over_face", "a hand covers the face in 30% of sampled frames (first at 1.2 s), "
                          "above occlusion.max_occluded_ratio=0.2")
    reason, detail = occlusion.decide({"occluded_ratio": 0.3}, config)   # a manifest without first_occluded
    assert reason == "hand_over_face" and "first at" not in detail
    assert occlusion.decide({"occluded_ratio": 0.2, "first_occluded": 0.0}, config) is None
    assert occlusion.decide({"occluded_ratio": 0.9}, OcclusionConfig(enabled=False)) is None


def test_sync_rules_read_only_their_own_metrics() -> None:
    config = SyncConfig()       # LSE-C >= 3, |offset| <= 6; the weight-free check's verdict
    assert sync.decide({"lse_c": 2.9, "offset": 9}, config)[0] == "out_of_sync"   # confidence is checked first
    assert sync.decide({"lse_c": 3.0, "offset": -7}, config) == (
        "av_offset", "SyncNet AV offset -7 frames exceeds sync.max_abs_offset=6")
    assert sync.decide({"lse_c": 3.0, "offset": 6}, config) is None
    # A proxy row of the manifest: the SyncNet columns are null; only a strong out-of-sync verdict rejects.
    row = {"lse_c": None, "offset": None, "verdict": "unsure", "proxy_lag": 3, "proxy_z": 2.0}
    assert sync.decide(row, config) is None
    assert sync.decide({**row, "verdict": "out_of_sync", "proxy_lag": 16, "proxy_z": 6.0}, config)[0] == "av_offset"
    assert sync.decide(row, SyncConfig(keep_unsure=False))[0] == "sync_unverified"
    assert sync.decide({"lse_c": 0.0, "verdict": "out_of_sync"}, SyncConfig(enabled=False)) is None


# ---------------------------------------------------------------- process() applies the same rule
@pytest.mark.parametrize("seconds", [0.0, 0.9, 1.0, 1.6])
def test_speech_process_rejects_exactly_when_decide_does(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    monkeypatch.setattr(speech, "read_audio", lambda clip: np.zeros(32000, np.float32))
    config = SpeechConfig(min_speech_ratio=0.5)
    stage = speech.SpeechStage(config)
    stage.vad = lambda audio: SpeechSegments(((0.2, 0.2 + seconds),) if seconds else (), 2.0)
    result = stage.process(make_clip())
    assert result.metrics["speech_ratio"] == pytest.approx(seconds / 2.0)
    assert outcome(result) == speech.decide(result.metrics, config)
    assert (result.reject == "no_speech") == (seconds / 2.0 < 0.5)


@pytest.mark.parametrize("occluded", [0, 5, 10, 11, 30])
def test_occlusion_process_rejects_exactly_when_decide_does(monkeypatch: pytest.MonkeyPatch, occluded: int) -> None:
    rgb = np.zeros((400, 400, 3), np.uint8)
    monkeypatch.setattr(occlusion, "clip_video", lambda clip: Path(clip.video_path))
    monkeypatch.setattr(occlusion, "iter_frames", lambda path, step=1: ((i, rgb) for i in range(0, N_FRAMES, step)))
    inside = Hands(np.array([[150.0, 150.0], [200.0, 200.0], [250.0, 250.0]]), np.ones(3))
    none = Hands(np.zeros((0, 2)), np.zeros(0))
    calls = iter(range(N_FRAMES))
    config = OcclusionConfig(sample_fps=25.0, max_occluded_ratio=0.2)
    stage = occlusion.OcclusionStage(config)
    stage.detector = lambda frame: inside if N_FRAMES - next(calls) <= occluded else none   # the last frames
    result = stage.process(make_clip())
    assert result.metrics["occluded_ratio"] == pytest.approx(occluded / N_FRAMES)
    assert outcome(result) == occlusion.decide(result.metrics, config)
    assert (result.reject == "hand_over_face") == (occluded / N_FRAMES > 0.2)


@pytest.mark.parametrize(("lag", "z", "keep_unsure"), [(2, 6.0, True), (2, 2.0, True), (2, 2.0, False), (-12, 6.0, True),
                                                     (-12, 4.0, True), (20, 9.0, False)])
def test_sync_proxy_process_rejects_exactly_when_decide_does(monkeypatch: pytest.MonkeyPatch, lag: int, z: float,
                                                             keep_unsure: bool) -> None:
    from vividhead.pipelines import lipsync

    monkeypatch.setattr(sync, "mouth_measures",
                        lambda clip, side: (np.zeros((N_FRAMES, 4)), np.zeros((N_FRAMES, 16, 32))))
    monkeypatch.setattr(sync, "read_audio", lambda clip: np.zeros(N_FRAMES * sync.SAMPLES_PER_FRAME, np.float32))
    monkeypatch.setattr(lipsync, "measure",
                        lambda mouth, audio, config, patches=None: lipsync.LipSyncMeasure(lag, 0.4, z, 1.0, "v"))
    stage = sync.SyncStage(SyncConfig(keep_unsure=keep_unsure))
    assert stage.mode() == "default"
    result = stage.process(make_clip())
    assert result.metrics["method"] == "proxy"
    assert outcome(result) == sync.decide(result.metrics, stage.config)


@pytest.mark.parametrize(("lse_c", "offset"), [(7.5, 1), (2.0, 0), (4.0, -9), (1.0, 9), (3.0, 6)])
def test_syncnet_process_rejects_exactly_when_decide_does(monkeypatch: pytest.MonkeyPatch, lse_c: float,
                                                          offset: int) -> None:
    from vividhead.models import syncnet

    rgb = np.zeros((400, 400, 3), np.uint8)
    monkeypatch.setattr(sync, "clip_video", lambda clip: Path(clip.video_path))
    monkeypatch.setattr(sync, "iter_frames", lambda path, step=1: ((i, rgb) for i in range(N_FRAMES)))
    monkeypatch.setattr(sync, "read_audio", lambda clip: np.zeros(N_FRAMES * sync.SAMPLES_PER_FRAME, np.float32))
    monkeypatch.setattr(syncnet, "score_sync", lambda *args, **kwargs: syncnet.SyncScore(
        lse_d=7.0, lse_c=lse_c, offset=offset, n_windows=N_FRAMES - 4, mean_dists=np.zeros(31)))
    stage = sync.SyncStage(SyncConfig())
    stage.model = object()      # stands for a loaded SyncNet: score_sync above does the scoring
    result = stage.process(make_clip())
    assert result.metrics["method"] == "syncnet" and result.metrics["lse_c"] == lse_c
    assert outcome(result) == sync.decide(result.metrics, stage.config)
