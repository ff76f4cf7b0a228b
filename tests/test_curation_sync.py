"""The weight-free lip-sync check: its pure parts, and its verdicts on real footage and derived copies.

Real cases come from ../shared/media/dev (DEV.md) and skip with a clear reason when it is absent; the
shifted and dubbed copies are made with ffmpeg in the test's temporary folder. The figures over every dev
speaker and copy come from benchmarks/sync_cv.py (cross-validated) and benchmarks/curation_accuracy.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import shared_path
from vividhead.evaluation.curation_cases import dubbed, shifted
from vividhead.pipelines import lipsync, sync
from vividhead.pipelines.clip_media import read_wav
from vividhead.pipelines.filter_config import SyncConfig
from vividhead.pipelines.records import Clip, Source

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


def _mouth(lips: np.ndarray) -> np.ndarray:
    """Mouth measures [n, 4] (face_mesh.MOUTH_COLUMNS) that all follow one opening signal."""
    return np.stack([lips, lips * 1.5, lips ** 2, lips], axis=1)


@pytest.mark.parametrize("lag", [-12, 0, 2, 9, 25])
def test_measure_finds_the_lag_and_is_confident(lag):
    lips = _syllables(400, 1)
    speech = np.roll(lips, lag)                       # speech[t + lag] = lips[t]: lips lead by `lag`
    found = lipsync.measure(_mouth(lips), _speech_like(speech, 2), SyncConfig())
    assert found.lag == lag and found.z > 6
    assert found.view == "area+dark 2-10 Hz"


def test_unrelated_speech_gives_a_weak_peak():
    found = lipsync.measure(_mouth(_syllables(400, 1)), _speech_like(_syllables(400, 7), 2), SyncConfig())
    assert found.z < SyncConfig().proxy_min_z


def test_more_views_need_a_higher_raw_peak():
    """The confidence is corrected for the views searched: two bands report a lower z for the same raw peak."""
    assert lipsync.sidak(4.0, 1) == 4.0
    assert 3.5 < lipsync.sidak(4.0, 2) < lipsync.sidak(4.0, 1)
    mouth, audio = _mouth(_syllables(400, 1)), _speech_like(np.roll(_syllables(400, 1), 2), 2)
    band = lipsync.measure(mouth, audio, SyncConfig())
    unfiltered = lipsync.measure(mouth, audio, SyncConfig(proxy_bands=(None,)))
    both = lipsync.measure(mouth, audio, SyncConfig(proxy_bands=((2.0, 10.0), None)))
    assert band.lag == unfiltered.lag == both.lag == 2
    decider = max((band, unfiltered), key=lambda m: m.z)
    assert both.view == decider.view and both.z == pytest.approx(lipsync.sidak(decider.z, 2))


def test_too_few_faces_or_frames_measure_nothing():
    config = SyncConfig()
    mouth = _mouth(_syllables(400, 1))
    mouth[::2] = np.nan                               # half the frames without a face is still enough
    assert lipsync.measure(mouth, _speech_like(_syllables(400, 1), 2), config) is not None
    mouth[1::4] = np.nan                              # three quarters without a face is not
    assert lipsync.measure(mouth, _speech_like(_syllables(400, 1), 2), config) is None
    assert lipsync.measure(_mouth(_syllables(60, 1)), _speech_like(_syllables(60, 1), 2), config) is None


def test_silence_floor_keeps_a_padded_track_from_dominating():
    audio = _speech_like(_syllables(200, 3), 4)
    audio[: 50 * lipsync.SAMPLES_PER_FRAME] = 0.0      # digital silence, as a delayed track starts
    envelope = lipsync.speech_envelope(audio, (300.0, 3000.0))
    assert envelope[:50].max() - envelope[:50].min() < 1e-9
    assert envelope[:50].min() >= np.percentile(envelope, 20) - 1e-9


@pytest.mark.parametrize(("lag", "z", "correct", "expected"), [
    (2, 6.0, False, ("in_sync", 0, "")),
    (5, 4.0, False, ("in_sync", 0, "")),              # lips leading by 5 frames is natural
    (2, 3.0, False, ("unsure", 0, "weak_peak")),
    (14, 4.0, False, ("unsure", 0, "weak_offset")),   # an offset, but not strong enough to reject
    (14, 5.5, False, ("out_of_sync", 0, "offset")),
    (7, 5.5, False, ("unsure", 0, "weak_offset")),    # past the verify window, inside the reject window
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
def _wav(source: Path, out: Path, seconds: float) -> np.ndarray:
    """The first `seconds` of a file's audio as 16 kHz mono float32 (as the build stages it)."""
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(source), "-map", "0:a:0", "-t",
                    f"{seconds:.3f}", "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(out)], check=True)
    return read_wav(out, 16000)


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory) -> dict[str, dict]:
    """Stage 10's weight-free verdicts on a real anchor (512x512 crop, 20 s), her audio delayed and advanced by
    500 ms, and the Trump address's voice over her face (dubbed, as long as the shorter: 10 s). The face mesh
    runs once on the anchor's video (the audio variants share it), through the stage's own code."""
    folder = tmp_path_factory.mktemp("sync_cases")
    anchor, voice = DEV / "yerfor__MimicTalk__German_20s.mp4", DEV / "yerfor__MimicTalk__Trump_10s.mp4"
    video = folder / "anchor.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(anchor), "-map", "0:v:0", "-vf",
                    "fps=25", "-c:v", "libx264", "-preset", "veryfast", str(video)], check=True)
    clip = Clip(key="anchor", source=Source(source_id="anchor", uri=str(anchor)), start=0.0, end=20.0,
                video_path=str(video), wav_path="unused.wav")
    mouth = sync.mouth_measures(clip, SyncConfig().proxy_max_resolution)
    seconds = len(mouth) / 25
    audio = {
        "anchor": _wav(anchor, folder / "anchor.wav", seconds),
        "delayed_500": _wav(shifted(anchor, 500, folder / "d500.mp4"), folder / "d500.wav", seconds),
        "advanced_500": _wav(shifted(anchor, -500, folder / "a500.mp4"), folder / "a500.wav", seconds),
        "dubbed": _wav(dubbed(anchor, voice, folder / "dubbed.mp4"), folder / "dubbed.wav", seconds),
    }
    out = {}
    for name, samples in audio.items():
        frames = min(len(mouth), len(samples) // lipsync.SAMPLES_PER_FRAME)
        result = sync.proxy_result(mouth[:frames], samples, SyncConfig())
        out[name] = {**result.metrics, "reject": result.reject}
    return out


@needs_dev
def test_in_sync_speaker_is_verified(verdicts):
    metrics = verdicts["anchor"]
    assert metrics["verdict"] == "in_sync" and metrics["verified"] is True and metrics["reject"] is None, metrics
    assert -1 <= metrics["proxy_lag"] <= 5 and metrics["proxy_view"] == "area+dark 2-10 Hz"
    assert "lse_c" not in metrics and "lse_d" not in metrics      # a proxy value never takes SyncNet's names


@needs_dev
@pytest.mark.parametrize("name", ["delayed_500", "advanced_500"])
def test_shifted_copies_are_not_verified(verdicts, name):
    metrics = verdicts[name]
    assert metrics["verified"] is False and metrics["verdict"] in ("out_of_sync", "unsure"), metrics
    if metrics["verdict"] == "out_of_sync":
        assert metrics["reject"] == "av_offset"


@needs_dev
def test_shifted_copies_move_the_measured_lag_by_the_shift(verdicts):
    base = verdicts["anchor"]["proxy_lag"]
    assert abs(verdicts["delayed_500"]["proxy_lag"] - base - 12.5) <= 2
    assert abs(verdicts["advanced_500"]["proxy_lag"] - base + 12.5) <= 2


@needs_dev
def test_dubbed_copy_is_not_verified(verdicts):
    metrics = verdicts["dubbed"]
    assert metrics["verified"] is False and metrics["verdict"] in ("out_of_sync", "unsure"), metrics
