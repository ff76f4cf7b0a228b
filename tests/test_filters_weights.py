"""Every filter stage with tiny real-format weights, loaded through the same code path real weights take.

The clip is synthetic (a 2 s 512x512 25 fps video and a 16 kHz tone), so these tests need no media.
"""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tiny_models import (WHISPER_LANGUAGES, write_tiny_dwpose, write_tiny_genderage, write_tiny_syncnet,
                         write_tiny_wav2vec2, write_tiny_whisper, write_tiny_yolox)
from vividhead.pipelines.filter_config import AnnotateConfig, OcclusionConfig, SyncConfig
from vividhead.pipelines.records import Clip, Source
from vividhead.pipelines.stages import STAGES
from vividhead.weights import Weights

CLIP_STAGES = {stage.name: stage.model for stage in STAGES if stage.model}   # the model stages, in table order

N_FRAMES = 30
CENTER_BOX = [156.0, 156.0, 356.0, 356.0]   # the tiny DWpose puts every hand point at (256, 256)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Weights:
    root = tmp_path_factory.mktemp("tiny weights")
    return Weights(
        dwpose_det=write_tiny_yolox(root / "yolox.onnx"),
        dwpose_pose=write_tiny_dwpose(root / "dw-ll_ucoco_384.onnx"),
        syncnet=write_tiny_syncnet(root / "syncnet_v2.model"),
        wav2vec2=write_tiny_wav2vec2(root / "wav2vec2 tiny"),
        genderage=write_tiny_genderage(root / "genderage.onnx", male=True, age=42.0),
        language_id=write_tiny_whisper(root / "whisper-tiny"),
    )


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("clip ü")
    video, wav = root / "clip.mp4", root / "clip.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc2=size=512x512:rate=25:duration={N_FRAMES / 25}", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-preset", "ultrafast", str(video)], check=True)
    t = np.arange(N_FRAMES * 640) / 16000
    sf.write(wav, (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) / 2).astype(np.float32),
             16000, subtype="PCM_16")
    return video, wav


def make_clip(files: tuple[Path, Path], box=CENTER_BOX, attributes=()) -> Clip:
    return Clip(key="tiny", source=Source(source_id="tiny", uri=str(files[0]), attributes=attributes),
                start=0.0, end=N_FRAMES / 25, n_frames=N_FRAMES, video_path=str(files[0]), wav_path=str(files[1]),
                face_track=np.tile(np.asarray(box, np.float32), (N_FRAMES, 1)))


def run(stage_name: str, config, weights: Weights, clip: Clip):
    stage = CLIP_STAGES[stage_name](config, weights)
    assert stage.mode() == "weights", stage.reason()
    stage.setup()
    try:
        result = stage.process(clip)
    finally:
        stage.teardown()
    assert set(result.metrics) <= set(stage.metric_types)
    clip.apply(stage_name, result)
    return result


def test_occlusion_with_dwpose_onnx(weights, clip_files):
    covered = make_clip(clip_files)
    result = run("occlusion", OcclusionConfig(sample_fps=5), weights, covered)
    assert result.metrics["method"] == "dwpose"
    assert result.metrics["sampled_frames"] == 6 and result.metrics["occluded_ratio"] == 1.0
    assert covered.status == "rejected" and covered.reject_reason == "hand_over_face"

    clear = make_clip(clip_files, box=[0.0, 0.0, 100.0, 100.0])     # the hands are not over this face
    result = run("occlusion", OcclusionConfig(sample_fps=5), weights, clear)
    assert result.metrics["occluded_ratio"] == 0.0 and clear.status == "kept"
    assert clear.metrics["occlusion.hand_frames"] == 6


def test_sync_with_syncnet_state_dict(weights, clip_files):
    clip = make_clip(clip_files)
    result = run("sync", SyncConfig(batch_size=16), weights, clip)
    m = result.metrics
    assert m["method"] == "syncnet" and m["windows"] == N_FRAMES - 5
    assert np.isfinite(m["lse_d"]) and m["lse_c"] >= 0 and -15 <= m["offset"] <= 15
    assert "proxy_corr" not in m                     # the proxy is never recorded alongside as LSE
    # a random network has no confidence: the stage must say so, not pass the clip
    assert clip.status == "rejected" and clip.reject_reason in {"out_of_sync", "av_offset"}


def test_annotate_with_wav2vec2_genderage_and_whisper(weights, clip_files):
    from vividhead.models.audio_features import Wav2Vec2Encoder, streaming_features
    from vividhead.models.flashhead import GEOMETRY

    clip = make_clip(clip_files, attributes=(("ethnicity", "given-value"),))
    result = run("annotate", AnnotateConfig(min_language_prob=0.0), weights, clip)
    feats = np.load(io.BytesIO(result.outputs["audio.npy"]))
    assert feats.dtype == np.float16 and feats.shape == (N_FRAMES, 2, 32)
    assert result.metrics["audio_encoder"] == "wav2vec2" and result.metrics["audio_stride"] == 24

    # the rows equal the streaming cache's features for the same audio (float16 tolerance)
    audio, _ = sf.read(clip_files[1], dtype="float32")
    expected = streaming_features(Wav2Vec2Encoder(weights.wav2vec2), audio, N_FRAMES,
                                  stride=GEOMETRY["lite"].new_frames)
    np.testing.assert_allclose(feats.astype(np.float32), expected, rtol=1e-2, atol=1e-2)

    attrs = clip.attributes
    assert (attrs["gender"].value, attrs["gender"].provenance) == ("male", "model")
    assert (attrs["age"].value, attrs["age"].provenance) == ("42", "model")
    assert attrs["language"].provenance == "model" and f"<|{attrs['language'].value}|>" in WHISPER_LANGUAGES
    assert (attrs["ethnicity"].value, attrs["ethnicity"].provenance) == ("given-value", "given")
    assert "mask.png" in result.outputs and 0 <= result.metrics["mask_ratio"] <= 1


def test_given_attributes_take_precedence_over_models(weights, clip_files):
    clip = make_clip(clip_files, attributes=(("gender", "female"), ("age", "30"), ("language", "es")))
    run("annotate", AnnotateConfig(audio_features=False, min_language_prob=0.0), weights, clip)
    assert {k: (a.value, a.provenance) for k, a in clip.attributes.items()} == {
        "gender": ("female", "given"), "age": ("30", "given"), "language": ("es", "given"),
        "ethnicity": ("unknown", "unknown")}
    assert "annotate.language_prob" not in clip.metrics


def test_unreadable_weights_fail_at_setup_with_the_path(tmp_path, clip_files):
    bad = tmp_path / "broken weights"
    bad.mkdir()
    (bad / "syncnet_v2.model").write_bytes(b"\x00garbage")
    (bad / "genderage.onnx").write_bytes(b"\x00garbage")
    sync = CLIP_STAGES["sync"](SyncConfig(), Weights(syncnet=bad / "syncnet_v2.model"))
    with pytest.raises(ValueError, match="syncnet_v2.model"):
        sync.setup()
    annotate = CLIP_STAGES["annotate"](AnnotateConfig(audio_features=False), Weights(genderage=bad / "genderage.onnx"))
    with pytest.raises(ValueError, match="genderage.onnx"):
        annotate.setup()


def test_sync_corrects_a_small_offset_by_shifting_the_audio(weights, clip_files, monkeypatch):
    from vividhead.models import syncnet

    fixed = syncnet.SyncScore(lse_d=6.0, lse_c=7.5, offset=2, n_windows=N_FRAMES - 5, mean_dists=np.zeros(31))
    monkeypatch.setattr(syncnet, "score_sync", lambda *args, **kwargs: fixed)
    clip = make_clip(clip_files)
    result = run("sync", SyncConfig(correct_offset=True, max_correct_offset=3), weights, clip)
    assert clip.status == "kept" and result.metrics["audio_shift"] == 2
    shifted, rate = sf.read(io.BytesIO(result.outputs["wav"]), dtype="float32")
    original, _ = sf.read(clip_files[1], dtype="float32")
    assert rate == 16000 and len(shifted) == len(original)
    np.testing.assert_allclose(shifted[2 * 640:], original[: -2 * 640], atol=1e-4)

    far = syncnet.SyncScore(lse_d=6.0, lse_c=7.5, offset=5, n_windows=N_FRAMES - 5, mean_dists=np.zeros(31))
    monkeypatch.setattr(syncnet, "score_sync", lambda *args, **kwargs: far)
    result = run("sync", SyncConfig(correct_offset=True, max_correct_offset=3), weights, make_clip(clip_files))
    assert "wav" not in result.outputs and result.metrics["audio_shift"] == 0 and result.reject is None


def test_proxy_keeps_a_clip_without_a_face_unverified(clip_files):
    stage = CLIP_STAGES["sync"](SyncConfig(), Weights())
    assert stage.mode() == "default"
    stage.setup()
    result = stage.process(make_clip(clip_files))    # a test pattern: no face for the mesh to find
    assert result.reject is None                     # no measure is no evidence: kept, marked not verified
    assert result.metrics["verdict"] == "unsure" and result.metrics["verified"] is False
    assert result.metrics["unsure_reason"] == "no_measure" and "proxy_z" not in result.metrics
