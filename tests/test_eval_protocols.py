"""The named evaluation protocols: each one's preprocessing on real frames, and its formulas.

Real frames come from ../shared/media (tests skip when it is absent). Where a protocol reproduces
what ffmpeg does inside the reference tool (the JPEG dump, `-r 25`, `-ac 1`), the test runs the
ffmpeg command line on the same input and compares (skipped when ffmpeg is not installed).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import soundfile
import torch
from scipy import linalg

from conftest import run_vividhead
from test_eval_networks import write_tiny_i3d
from vividhead.evaluation.frechet import feature_stats, frechet_distance_features
from vividhead.evaluation.fvd import FVDConfig, FVDFeatures, stylegan_v_input
from vividhead.evaluation.report import EvalReport, MetricRow, VideoScore, format_table
from vividhead.evaluation.runner import _sync_rows
from vividhead.evaluation.sync import (ffmpeg_r25_indices, jpeg_round_trip, mp3_delay, reference_track, to_25fps,
                                       to_pcm16)
from vividhead.evaluation.videos import decode_audio_averaged, decode_video
from vividhead.models.i3d import preprocess_clips

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command line is not installed")


def _ffmpeg(*args: str | Path, data: bytes | None = None) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], input=data, check=True)


def _decode(path: Path, seconds: float | None = None):
    video = decode_video(path, str(path))
    if seconds is None:
        return video
    keep = video.times < seconds
    return video.frames[keep], video.times[keep]


# ------------------------------------------------------------------------------------ Sync
@needs_ffmpeg
def test_jpeg_round_trip_matches_ffmpegs_default_quality_on_real_crops(media_dir, tmp_path):
    video = _decode(media_dir / "video" / "videoretalking_face3.mp4")
    crops = np.stack([cv2.resize(cv2.cvtColor(f, cv2.COLOR_RGB2BGR), (224, 224)) for f in video.frames[:40]])
    ours = jpeg_round_trip(crops)
    # the reference: `ffmpeg -i crop.avi -f image2 %06d.jpg` on 4:2:0 video (here the same 4:2:0 frames
    # our round trip starts from), read back with cv2.imread
    yuv = b"".join(av.VideoFrame.from_ndarray(c, format="bgr24").reformat(format="yuv420p").to_ndarray().tobytes()
                   for c in crops)
    _ffmpeg("-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", "224x224", "-r", "25", "-i", "-", "-threads", "1",
            "-f", "image2", tmp_path / "%06d.jpg", data=yuv)
    theirs = np.stack([cv2.imread(str(p)) for p in sorted(tmp_path.glob("*.jpg"))])
    assert ours.shape == theirs.shape == crops.shape and ours.dtype == np.uint8

    def psnr(a, b):
        return 10 * np.log10(255.0 ** 2 / np.mean((a.astype(float) - b) ** 2))

    # the round trip is lossy (ffmpeg's default holds ~q 25 after its rate control settles) ...
    assert np.abs(ours.astype(int) - crops).mean() > 2.0
    assert psnr(ours[20:], crops[20:]) < 36
    # ... and loses what ffmpeg's does: within 0.5 dB of it, pixels within 1.5 levels on average
    assert abs(psnr(ours, crops) - psnr(theirs, crops)) < 0.5
    assert np.abs(ours.astype(int) - theirs).mean() < 1.5
    # quality falls over the first frames as the rate control settles, as in ffmpeg
    assert psnr(ours[:2], crops[:2]) > psnr(ours[20:], crops[20:]) + 2


def _reference_frames(clip: Path, folder: Path, seconds: float) -> list[np.ndarray]:
    """The frames syncnet_python's run_pipeline.py sees: its AVI conversion, then its JPEG dump."""
    _ffmpeg("-i", clip, "-t", str(seconds), "-qscale:v", "2", "-async", "1", "-r", "25", folder / "video.avi")
    _ffmpeg("-i", folder / "video.avi", "-qscale:v", "2", "-threads", "1", "-f", "image2", folder / "%06d.jpg")
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob("*.jpg"))]


@needs_ffmpeg
@pytest.mark.parametrize("name, seconds", [
    ("liveportrait_d14.mp4", 3.0),          # constant 30 fps, 44.1 kHz audio
    ("videoretalking_face1.mp4", 10.0),     # 30 fps with held frames, video starting 33 ms after the audio
    ("pcavs_00015.mp4", 3.0),               # 25 fps, 16 kHz audio (the AVI shifts it two slots)
])
def test_25_fps_frame_indices_follow_ffmpeg_r25_on_real_clips(media_dir, tmp_path, name, seconds):
    clip = media_dir / "video" / name
    video = _decode(clip)
    ours = ffmpeg_r25_indices(video.start + video.times, audio_delay=mp3_delay(video.audio_rate))
    dumped = _reference_frames(clip, tmp_path, seconds)
    small = video.frames[:, ::8, ::8].astype(np.float32)
    theirs = np.array([((small - d[::8, ::8]) ** 2).mean(axis=(1, 2, 3)).argmin() for d in dumped])
    assert len(ours) >= len(theirs) > 70
    ours = ours[: len(theirs)]
    # where the indices differ, the two source frames are the same picture (the source repeats a frame)
    for k in np.flatnonzero(ours != theirs):
        assert ((small[ours[k]] - small[theirs[k]]) ** 2).mean() < 1.0, (k, ours[k], theirs[k])
    assert np.mean(ours == theirs) > 0.95


def test_30_fps_rule_differs_from_the_exact_resampling():
    times = np.arange(90) / 30
    ours = ffmpeg_r25_indices(times)
    # every frame kept until the lag passes 0.6 slots, then one in six dropped
    assert ours[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12]
    assert np.flatnonzero(np.diff(ours) == 2).tolist() == list(range(9, len(ours) - 1, 5))
    # with an MP3 track in the AVI (44.1 kHz: 25 ms early), frame 1 is shown twice and the rest one slot later
    assert ffmpeg_r25_indices(times, audio_delay=mp3_delay(44100))[:6].tolist() == [0, 1, 1, 2, 3, 4]
    # the exact protocol shows the frame on screen at each tick instead: floor(1.2 n)
    exact = to_25fps(np.arange(90)[:, None, None, None], 30.0, times)[:, 0, 0, 0]
    np.testing.assert_array_equal(exact, np.floor(np.arange(75) * 1.2 + 1e-9).astype(int))
    assert np.mean(exact != ours[:75]) > 0.8


@needs_ffmpeg
def test_reference_audio_is_delayed_by_the_mp3_track(media_dir, tmp_path):
    clip = media_dir / "video" / "videoretalking_face3.mp4"             # 44.1 kHz stereo
    video = _decode(clip)
    _ffmpeg("-i", clip, "-t", "4", "-qscale:v", "2", "-async", "1", "-r", "25", tmp_path / "video.avi")
    _ffmpeg("-i", tmp_path / "video.avi", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000", tmp_path / "a.wav")
    reference, _ = soundfile.read(tmp_path / "a.wav")
    delay = int(round(mp3_delay(video.audio_rate) * 16000))
    assert delay == 401
    ours = np.concatenate([np.zeros(delay), video.audio])[: len(reference)]
    lags = range(-40, 41)
    window = slice(4000, 4000 + 32000)
    corr = [np.dot(reference[window], np.roll(ours, lag)[window]) for lag in lags]
    assert lags[int(np.argmax(corr))] == 0
    assert np.corrcoef(reference[window], ours[window])[0, 1] > 0.95   # the MP3 round trip itself is lossy


def test_25_fps_needs_no_resampling_under_either_rule():
    times = np.arange(60) / 25
    np.testing.assert_array_equal(ffmpeg_r25_indices(times), np.arange(60))


def test_a_frame_held_longer_is_repeated_as_ffmpeg_fills_the_gap():
    # variable frame rate: frame 2 is shown for 4 ticks. ffmpeg's dump fills the gap with two copies of
    # frame 2 and two of frame 3 (the new frame takes the last two slots), so frame 3 shows one tick early
    times = np.array([0, 1, 2, 6, 7]) / 25
    assert ffmpeg_r25_indices(times).tolist() == [0, 1, 2, 2, 2, 3, 3, 4]


@needs_ffmpeg
def test_stereo_is_averaged_to_mono_as_ffmpeg_ac_1_does(media_dir, tmp_path):
    clip = media_dir / "video" / "videoretalking_face3.mp4"         # stereo AAC
    _ffmpeg("-i", clip, "-t", "4", "-ac", "1", "-vn", "-acodec", "pcm_s16le", "-ar", "16000", tmp_path / "ref.wav")
    reference, rate = soundfile.read(tmp_path / "ref.wav")
    ours = decode_audio_averaged(clip, str(clip))[: len(reference)]
    assert rate == 16000 and np.std(reference) > 0.01
    np.testing.assert_allclose(to_pcm16(ours), reference, atol=2 / 32768)


def test_pcm16_rounds_and_clips():
    assert to_pcm16(np.array([0.0, 1.2 / 32768, -1.6 / 32768, 2.0, -2.0])).tolist() == \
        [0.0, 1 / 32768, -2 / 32768, 32767 / 32768, -1.0]


def test_reference_track_keeps_tracks_over_100_frames_with_faces_over_100_px():
    boxes = np.tile([100.0, 100.0, 260.0, 280.0], (300, 1))          # a 180 px face
    boxes[150:170] = np.nan                                         # 20 missed frames: same track
    assert reference_track(boxes) == (0, 300)
    boxes[150:180] = np.nan                                         # 30 missed: two tracks, the longer kept
    assert reference_track(boxes) == (0, 150)
    boxes[40:180] = np.nan
    assert reference_track(boxes) == (180, 300)                     # 40 frames is too short a track
    assert "longer than 100" in reference_track(boxes[:100])
    small = np.tile([0.0, 0.0, 80.0, 90.0], (150, 1))
    assert "too small" in reference_track(small)
    jump = np.tile([0.0, 0.0, 150.0, 150.0], (240, 1))
    jump[120:] += 300                                               # the face jumps: IOU 0, a new track
    assert reference_track(jump) == (0, 120)


# ------------------------------------------------------------------------------------- FVD
def _tiny_i3d(tmp_path: Path) -> Path:
    return write_tiny_i3d(tmp_path / "i3d_torchscript.pt")


def test_stylegan_v_squashes_and_fvd_comparison_crops(media_dir):
    frames, _ = _decode(media_dir / "video" / "liveportrait_d13.mp4", seconds=0.6)   # 720x1280, portrait
    clip = frames[None, :16]
    assert clip.shape == (1, 16, 1280, 720, 3)
    cropped = preprocess_clips(torch.from_numpy(clip))
    assert cropped.shape == (1, 3, 16, 224, 224)                    # short side 224, centre 224x224
    raw = stylegan_v_input(clip)
    assert raw.shape == (1, 3, 16, 1280, 720) and raw.max() > 200   # uint8 values; the detector squashes
    squashed = torch.nn.functional.interpolate(raw, size=(16, 224, 224), mode="trilinear", align_corners=False)
    assert squashed.shape == (1, 3, 16, 224, 224)
    # the crop keeps the middle 720x720 of the frame; the squash keeps all 1280 rows
    top = torch.nn.functional.interpolate(raw[:, :, :1, :280], size=(1, 49, 224), mode="trilinear")
    assert torch.allclose(squashed[:, :, :1, :49] / 127.5 - 1, top / 127.5 - 1, atol=0.2)
    assert not torch.allclose(cropped[:, :, :1, :49], top / 127.5 - 1, atol=0.2)


def test_fvd_protocols_agree_on_square_video_and_differ_on_non_square(media_dir, tmp_path):
    weights = _tiny_i3d(tmp_path)
    stylegan = FVDFeatures(weights, torch.device("cpu"), FVDConfig("stylegan-v"))
    comparison = FVDFeatures(weights, torch.device("cpu"), FVDConfig("fvd-comparison"))
    square, _ = _decode(media_dir / "video" / "videoretalking_face3.mp4", seconds=0.7)    # 590x590
    tall, _ = _decode(media_dir / "video" / "liveportrait_d13.mp4", seconds=0.6)          # 720x1280
    for frames, same in ((square, True), (tall, False)):
        a = stylegan.clip_features(frames[None, :16])
        b = comparison.clip_features(frames[None, :16])
        assert a.shape == b.shape == (1, 400)
        assert np.allclose(a, b, rtol=1e-4, atol=1e-4) == same, np.abs(a - b).max()


def test_stylegan_v_takes_one_seeded_random_reference_clip_and_the_first_generated_clip(tmp_path):
    weights = _tiny_i3d(tmp_path)
    first = FVDFeatures(weights, torch.device("cpu"), FVDConfig("stylegan-v", seed=3))
    again = FVDFeatures(weights, torch.device("cpu"), FVDConfig("stylegan-v", seed=3))
    starts = [first.clips(100, reference=True)[0].start for _ in range(8)]
    assert starts == [again.clips(100, reference=True)[0].start for _ in range(8)]
    assert len(set(starts)) > 1 and all(0 <= s <= 84 for s in starts)
    assert first.clips(100, reference=False) == [slice(0, 16)]
    assert first.clips(15, reference=True) == []
    every = FVDFeatures(weights, torch.device("cpu"), FVDConfig("fvd-comparison"))
    assert every.clips(100, reference=True) == [slice(s, s + 16) for s in range(0, 81, 16)]


def test_covariance_divides_by_n_or_n_minus_1_as_numpy_does():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 6)) @ rng.standard_normal((6, 6))
    y = 0.7 * rng.standard_normal((16, 6)) + 0.4
    np.testing.assert_allclose(feature_stats(x, ddof=1).sigma, np.cov(x, rowvar=False), atol=1e-12)
    np.testing.assert_allclose(feature_stats(x, ddof=0).sigma, np.cov(x, rowvar=False, bias=True), atol=1e-12)
    np.testing.assert_allclose(feature_stats(x, ddof=0).sigma * 16 / 15, feature_stats(x, ddof=1).sigma, atol=1e-12)

    def direct(bias: bool) -> float:
        s1, s2 = np.cov(x, rowvar=False, bias=bias), np.cov(y, rowvar=False, bias=bias)
        return float(np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real))

    biased, unbiased = frechet_distance_features(x, y, ddof=0), frechet_distance_features(x, y, ddof=1)
    assert biased == pytest.approx(direct(True), rel=1e-9) and unbiased == pytest.approx(direct(False), rel=1e-9)
    assert biased < unbiased                  # 16 clips: the /N covariances are 6 % smaller
    # few samples (the nuclear-norm route) obey the same N vs N-1 rule
    wide_x, wide_y = rng.standard_normal((8, 30)), rng.standard_normal((9, 30)) + 0.1
    s1, s2 = np.cov(wide_x, rowvar=False, bias=True), np.cov(wide_y, rowvar=False, bias=True)
    root = linalg.sqrtm(s1 @ s2).real
    expected = np.sum((wide_x.mean(0) - wide_y.mean(0)) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance_features(wide_x, wide_y, ddof=0) == pytest.approx(expected, rel=1e-6)


# ---------------------------------------------------------------------------------- report
def test_report_offset_is_mean_absolute_with_the_share_at_the_search_limit():
    scores = [VideoScore("a", "a", "generated", 100, 25.0, 5.0, 8.0, 15),
              VideoScore("b", "b", "generated", 100, 25.0, 5.0, 8.0, -15),
              VideoScore("c", "c", "generated", 100, 25.0, 5.0, 8.0, 1),
              VideoScore("d", "d", "generated", 100, 25.0, 5.0, 8.0, -1)]
    offset = {r.metric: r for r in _sync_rows(scores, "syncnet_python")}["AV offset"]
    assert offset.value == 8.0 and offset.detail["signed_mean"] == 0.0   # a signed mean would read "perfect"
    assert offset.detail["videos_at_search_limit"] == 2 and offset.detail["share_at_search_limit"] == 0.5
    assert offset.protocol == "syncnet_python"
    assert [w.code for w in offset.warnings] == ["offset_at_search_limit"] and "2 of 4 videos" in offset.warnings[0].message


def test_table_rows_go_quality_then_sync_then_speed_with_protocols():
    rows = [MetricRow.ok("FPS", 30.0, device="x"), MetricRow.ok("Sync-C", 5.0, "syncnet_python"),
            MetricRow.ok("Sync-C (reference)", 7.0, "syncnet_python"), MetricRow.ok("AV offset", 1.0, "syncnet_python"),
            MetricRow.ok("FVD", 100.0, "stylegan-v"), MetricRow.ok("FID", 9.0, "pytorch-fid")]
    table = format_table(EvalReport("g", "r", rows, [], {}, {}))
    metrics = [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert metrics == ["FID ↓", "FVD ↓", "Sync-C ↑", "AV offset ↓", "Sync-C (reference) ↑", "FPS ↑"]
    assert "  |" not in table.replace("|---", "")
    assert "| FVD ↓ | 100.0 | stylegan-v |" in table and "| FPS ↑ | 30.00 | - | device=x |" in table


def test_help_shows_the_defaults():
    text = " ".join(run_vividhead("eval", "--help").stdout.split())
    assert "(default: syncnet_python)" in text and "(default: stylegan-v)" in text
    assert "(default: pytorch-fid)" in text and "(default: sync,fid,fvd,fps)" in text
    assert "(default: None)" not in text
