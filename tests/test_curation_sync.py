"""The weight-free lip-sync check: its pure parts, and its verdicts on real footage and derived copies.

Real cases come from ../shared/media/dev (DEV.md) and skip with a clear reason when it is absent; the
shifted, dubbed and voice-over copies are made with ffmpeg in the test's temporary folder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from vividhead.evaluation.curation_cases import dubbed, shifted
from vividhead.pipelines import lipsync, sync
from vividhead.pipelines.filter_config import SyncConfig
from vividhead.pipelines.records import Clip, Source
from vividhead.weights import Weights

DEV = shared_path() / "media" / "dev"
needs_dev = pytest.mark.skipif(not (DEV / "DEV.md").is_file(), reason=f"dev footage not found at {DEV}")


# ----------------------------------------------------------------------------------------- pure parts
def _syllables(n: int, seed: int) -> np.ndarray:
    """A random 2-6 Hz 'syllable' envelope, one value per 25 fps frame, in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.convolve(rng.random(n + 20) ** 3, np.hanning(7), mode="same")[10: n + 10]
    return x / x.max()


def _speech_like(envelope: np.ndarray, seed: int) -> np.ndarray:
    """16 kHz noise in the speech band, amplitude-modulated by `envelope` (one value per frame)."""
    noise = np.random.default_rng(seed).standard_normal(len(envelope) * lipsync.SAMPLES_PER_FRAME)
    return (noise * np.repeat(0.02 + envelope, lipsync.SAMPLES_PER_FRAME) * 0.1).astype(np.float32)


@pytest.mark.parametrize("lag", [-12, 0, 2, 9, 25])
def test_measure_finds_the_lag_and_is_confident(lag):
    lips = _syllables(400, 1)
    speech = np.roll(lips, lag)                       # speech[t + lag] = lips[t]: lips lead by `lag`
    gaps = np.stack([lips, lips * 1.5], axis=1)
    found = lipsync.measure(gaps, _speech_like(speech, 2), SyncConfig())
    assert found.lag == lag and found.z > 6


def test_unrelated_speech_gives_a_weak_peak():
    gaps = np.stack([_syllables(400, 1)] * 2, axis=1)
    found = lipsync.measure(gaps, _speech_like(_syllables(400, 7), 2), SyncConfig())
    assert found.z < SyncConfig().proxy_min_z


def test_too_few_faces_or_frames_measure_nothing():
    config = SyncConfig()
    gaps = np.stack([_syllables(400, 1)] * 2, axis=1)
    gaps[::2] = np.nan                                # half the frames without a face is still enough
    assert lipsync.measure(gaps, _speech_like(_syllables(400, 1), 2), config) is not None
    gaps[1::4] = np.nan                               # three quarters without a face is not
    assert lipsync.measure(gaps, _speech_like(_syllables(400, 1), 2), config) is None
    assert lipsync.measure(gaps[:60], _speech_like(_syllables(60, 1), 2), config) is None


def test_silence_floor_keeps_a_padded_track_from_dominating():
    audio = _speech_like(_syllables(200, 3), 4)
    audio[: 50 * lipsync.SAMPLES_PER_FRAME] = 0.0      # digital silence, as a delayed track starts
    envelope = lipsync.speech_envelope(audio, (300.0, 3000.0))
    assert envelope[:50].max() - envelope[:50].min() < 1e-9
    assert envelope[:50].min() >= np.percentile(envelope, 20) - 1e-9


@pytest.mark.parametrize(("lag", "z", "correct", "expected"), [
    (2, 6.0, False, ("in_sync", 0, "")),
    (6, 3.6, False, ("in_sync", 0, "")),              # lips leading by 6 frames is natural
    (2, 3.0, False, ("unsure", 0, "weak_peak")),
    (14, 4.5, False, ("unsure", 0, "weak_offset")),   # an offset, but not strong enough to reject
    (14, 5.5, False, ("out_of_sync", 0, "offset")),
    (-25, 2.0, False, ("unsure", 0, "weak_peak")),
    (9, 5.5, True, ("in_sync", -7, "corrected")),     # audio advanced by 7 frames to the natural lead
    (-4, 5.5, True, ("in_sync", 6, "corrected")),
    (14, 5.5, True, ("out_of_sync", 0, "offset")),    # beyond proxy_max_correct_offset
    (None, None, False, ("unsure", 0, "no_measure")),
])
def test_decide(lag, z, correct, expected):
    decision = lipsync.decide(lag, z, SyncConfig(correct_offset=correct))
    assert (decision.verdict, decision.audio_shift, decision.reason) == expected


def test_stage_decide_rejects_only_out_of_sync_unless_unsure_clips_are_dropped():
    config = SyncConfig()
    unsure = {"method": "proxy", "verdict": "unsure", "unsure_reason": "weak_peak", "proxy_lag": 1, "proxy_z": 2.0}
    assert sync.decide(unsure, config) is None
    assert sync.decide(unsure, SyncConfig(keep_unsure=False))[0] == "sync_unverified"
    assert sync.decide({**unsure, "verdict": "in_sync"}, SyncConfig(keep_unsure=False)) is None
    rejected = sync.decide({**unsure, "verdict": "out_of_sync", "proxy_lag": 15, "proxy_z": 6.0}, config)
    assert rejected[0] == "av_offset" and "15 frames apart" in rejected[1] and "LSE" not in rejected[1]
    # SyncNet's scores decide by SyncNet's thresholds, whatever the stored verdict
    assert sync.decide({"lse_c": 5.0, "offset": 1, "verdict": "out_of_sync"}, config) is None


# ------------------------------------------------------------------------------------ real footage
def _staged(source: Path, folder: Path) -> Clip:
    """The clip as the sync stage reads it: 25 fps video and a 16 kHz mono wav (these sources are face crops)."""
    folder = folder / "staged"
    folder.mkdir(exist_ok=True)
    video, wav = folder / f"{source.stem}.mp4", folder / f"{source.stem}.wav"
    base = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source)]
    subprocess.run([*base, "-map", "0:v:0", "-vf", "fps=25", "-c:v", "libx264", "-preset", "veryfast", str(video)],
                   check=True)
    subprocess.run([*base, "-map", "0:a:0", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(wav)], check=True)
    return Clip(key=source.stem, source=Source(source_id=source.stem, uri=str(source)), start=0.0, end=0.0,
                video_path=str(video), wav_path=str(wav))


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, dict]:
    """Sync metrics of real in-sync speakers and of their shifted, dubbed and voice-over copies."""
    folder = tmp_path_factory.mktemp("sync_cases")
    lrs2, anchor = DEV / "smeetrs__deep_avsr__00016.mp4", DEV / "yerfor__MimicTalk__German_20s.mp4"
    cases = {
        "lrs2": lrs2, "anchor": anchor,
        "lrs2_delayed_500": shifted(lrs2, 500, folder / "lrs2_d500.mp4"),
        "lrs2_advanced_500": shifted(lrs2, -500, folder / "lrs2_a500.mp4"),
        "anchor_delayed_1000": shifted(anchor, 1000, folder / "anchor_d1000.mp4"),
        "dubbed": dubbed(lrs2, anchor, folder / "dubbed.mp4"),             # the anchor's voice on the LRS2 face
        "voice_over": dubbed(DEV / "eknim__video-retalking__lee.mp4", anchor, folder / "voice_over.mp4"),
    }
    stage = sync.SyncStage(SyncConfig(), Weights())
    assert stage.mode() == "default"
    out = {}
    for name, path in cases.items():
        result = stage.process(_staged(path, folder))
        out[name] = {**result.metrics, "reject": result.reject}
    return out


@needs_dev
@pytest.mark.parametrize("name", ["lrs2", "anchor"])
def test_in_sync_speakers_are_verified(verdicts, name):
    metrics = verdicts[name]
    assert metrics["verdict"] == "in_sync" and metrics["verified"] is True and metrics["reject"] is None, metrics
    assert -2 <= metrics["proxy_lag"] <= 6
    assert "lse_c" not in metrics and "lse_d" not in metrics      # a proxy value never takes SyncNet's names


@needs_dev
@pytest.mark.parametrize("name", ["lrs2_delayed_500", "lrs2_advanced_500", "anchor_delayed_1000"])
def test_shifted_copies_are_not_verified(verdicts, name):
    metrics = verdicts[name]
    assert metrics["verified"] is False and metrics["verdict"] in ("out_of_sync", "unsure"), metrics
    if metrics["verdict"] == "out_of_sync":
        assert metrics["reject"] == "av_offset"


@needs_dev
def test_shifted_copies_move_the_measured_lag_by_the_shift(verdicts):
    base = verdicts["lrs2"]["proxy_lag"]
    assert abs(verdicts["lrs2_delayed_500"]["proxy_lag"] - base - 12.5) <= 2
    assert abs(verdicts["lrs2_advanced_500"]["proxy_lag"] - base + 12.5) <= 2


@needs_dev
@pytest.mark.parametrize("name", ["dubbed", "voice_over"])
def test_dubbed_and_voice_over_are_not_verified(verdicts, name):
    metrics = verdicts[name]
    assert metrics["verified"] is False and metrics["verdict"] in ("out_of_sync", "unsure"), metrics
