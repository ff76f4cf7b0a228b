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


def _patches(lips: np.ndarray, seed: int = 5) -> np.ndarray:
    """Grey mouth patches [n, 16, 32] (face_mesh.mouth_patch) of a textured face whose mouth middle darkens as
    `lips` opens, with a little camera noise."""
    rng = np.random.default_rng(seed)
    face = 120.0 + 20.0 * rng.random((16, 32))
    mouth = np.zeros((16, 32))
    mouth[4:12, 8:24] = 80.0
    frames = face - lips[:, None, None] * mouth + rng.normal(0.0, 2.0, (len(lips), 16, 32))
    return np.clip(np.round(frames), 0, 255).astype(np.uint8)


LIPS = {"proxy_signal": "lips", "proxy_bands": ((2.0, 10.0),), "proxy_lead_frames": 2}   # the lip-measure signal


def test_measure_moves_the_lag_with_the_shift_and_is_confident():
    """The canonical signal (the default) reads the patches' change per frame, so its peak may sit a frame or
    two off the opening's own lag; a shift of the speech moves the measured lag by exactly the shift."""
    lips = _syllables(400, 1)
    audio = {lag: _speech_like(np.roll(lips, lag), 2) for lag in (-12, 0, 9, 25)}   # speech[t + lag] = lips[t]
    found = {lag: lipsync.measure(_mouth(lips), a, SyncConfig(), _patches(lips)) for lag, a in audio.items()}
    assert abs(found[0].lag) <= 2 and all(f.z > 6 for f in found.values())
    assert all(f.lag - found[0].lag == lag for lag, f in found.items())
    assert found[0].view == "canonical motion 4x2 1-8 Hz" and 0 < found[0].corr <= 1


def test_the_canonical_signal_needs_the_patches():
    with pytest.raises(ValueError, match="patches"):
        lipsync.measure(_mouth(_syllables(400, 1)), _speech_like(_syllables(400, 1), 2), SyncConfig())


@pytest.mark.parametrize("lag", [-12, 0, 2, 9, 25])
def test_lips_measure_finds_the_lag_and_is_confident(lag):
    lips = _syllables(400, 1)
    speech = np.roll(lips, lag)                       # speech[t + lag] = lips[t]: lips lead by `lag`
    found = lipsync.measure(_mouth(lips), _speech_like(speech, 2), SyncConfig(**LIPS))
    assert found.lag == lag and found.z > 6
    assert found.view == "area+dark 2-10 Hz"


@pytest.mark.parametrize("signal", [{}, LIPS])
def test_unrelated_speech_gives_a_weak_peak(signal):
    lips = _syllables(400, 1)
    found = lipsync.measure(_mouth(lips), _speech_like(_syllables(400, 7), 2), SyncConfig(**signal), _patches(lips))
    assert found.z < SyncConfig().proxy_min_z


@pytest.mark.parametrize("signal", [{}, LIPS])
def test_more_views_need_a_higher_raw_peak(signal):
    """The confidence is corrected for the views searched: two bands report a lower z for the same raw peak."""
    assert lipsync.sidak(4.0, 1) == 4.0
    assert 3.5 < lipsync.sidak(4.0, 2) < lipsync.sidak(4.0, 1)
    lips = _syllables(400, 1)
    mouth, audio, patches = _mouth(lips), _speech_like(np.roll(lips, 2), 2), _patches(lips)
    config = {**signal, "proxy_bands": ((2.0, 10.0),)}
    band = lipsync.measure(mouth, audio, SyncConfig(**config), patches)
    unfiltered = lipsync.measure(mouth, audio, SyncConfig(**{**config, "proxy_bands": (None,)}), patches)
    both = lipsync.measure(mouth, audio, SyncConfig(**{**config, "proxy_bands": ((2.0, 10.0), None)}), patches)
    assert band.lag == unfiltered.lag == both.lag
    decider = max((band, unfiltered), key=lambda m: m.z)
    assert both.view == decider.view and both.z == pytest.approx(lipsync.sidak(decider.z, 2))


def test_too_few_faces_or_frames_measure_nothing():
    config = SyncConfig()
    lips = _syllables(400, 1)
    mouth, patches = _mouth(lips), _patches(lips)
    mouth[::2] = np.nan                               # half the frames without a face is still enough
    assert lipsync.measure(mouth, _speech_like(lips, 2), config, patches) is not None
    mouth[1::4] = np.nan                              # three quarters without a face is not
    assert lipsync.measure(mouth, _speech_like(lips, 2), config, patches) is None
    short = _syllables(60, 1)
    assert lipsync.measure(_mouth(short), _speech_like(short, 2), config, _patches(short)) is None


def test_principal_components_make_the_cross_covariance_canonical():
    """On whitened components the first singular value of the cross-covariance is the first canonical
    correlation: a speech band that is a mixture of two mouth components is found whole (correlation 1)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((300, 3))
    y = np.stack([x[:, 0] - 2 * x[:, 1], rng.standard_normal(300)], axis=1)
    seen, heard = lipsync.principal(x, 3), lipsync.principal(y, 2)
    assert np.allclose(seen.T @ seen / 300, np.eye(3), atol=1e-9)
    shifts = lipsync.canonical_shifts(lipsync.cross_covariances(seen, heard))
    assert shifts[0] == pytest.approx(1.0, abs=1e-9) and shifts[1:].max() < 0.4


def test_silence_floor_keeps_a_padded_track_from_dominating():
    audio = _speech_like(_syllables(200, 3), 4)
    audio[: 50 * lipsync.SAMPLES_PER_FRAME] = 0.0      # digital silence, as a delayed track starts
    envelope = lipsync.speech_envelope(audio, (300.0, 3000.0))
    assert envelope[:50].max() - envelope[:50].min() < 1e-9
    assert envelope[:50].min() >= np.percentile(envelope, 20) - 1e-9


@pytest.mark.parametrize(("lag", "z", "correct", "expected"), [   # the default: lead 1 +- 3, reject beyond 1 +- 5
    (1, 6.0, False, ("in_sync", 0, "")),
    (4, 5.0, False, ("in_sync", 0, "")),              # the mouth leading by 4 frames is natural
    (1, 3.0, False, ("unsure", 0, "weak_peak")),
    (14, 4.78, False, ("unsure", 0, "weak_offset")),  # an offset, but not strong enough to reject
    (14, 5.5, False, ("out_of_sync", 0, "offset")),
    (6, 5.5, False, ("unsure", 0, "weak_offset")),    # past the verify window, inside the reject window
    (-25, 2.0, False, ("unsure", 0, "weak_peak")),
    (9, 5.5, True, ("in_sync", -8, "corrected")),     # audio advanced by 8 frames to the natural lead
    (-6, 5.5, True, ("in_sync", 7, "corrected")),
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
    mouth, patches = sync.mouth_measures(clip, SyncConfig().proxy_max_resolution)
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
        result = sync.proxy_result(mouth[:frames], samples, SyncConfig(), patches[:frames])
        out[name] = {**result.metrics, "reject": result.reject}
    return out


@needs_dev
def test_in_sync_speaker_is_verified(verdicts):
    metrics = verdicts["anchor"]
    assert metrics["verdict"] == "in_sync" and metrics["verified"] is True and metrics["reject"] is None, metrics
    assert -2 <= metrics["proxy_lag"] <= 4 and metrics["proxy_view"] == "canonical motion 4x2 1-8 Hz"
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
