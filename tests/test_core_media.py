"""The media layer: decode from a path or from bytes, any stream order, and the sample members' codecs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vividhead import media

pytestmark = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")


def _ffmpeg_mp4(path: Path, audio_first: bool) -> Path:
    """2 s of a 160x120 25 fps test pattern with a 440 Hz tone; `audio_first` puts the audio stream at index 0."""
    video = ["-f", "lavfi", "-i", "testsrc=size=160x120:rate=25:duration=2"]
    audio = ["-f", "lavfi", "-i", "sine=frequency=440:duration=2:sample_rate=44100"]
    inputs, maps = (audio + video, ["-map", "0:a", "-map", "1:v"]) if audio_first else \
        (video + audio, ["-map", "0:v", "-map", "1:a"])
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *inputs, *maps, "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", "-shortest", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {"video_first": _ffmpeg_mp4(folder / "video_first.mp4", False),
            "audio_first": _ffmpeg_mp4(folder / "audio_first.mp4", True)}


def test_an_audio_first_mp4_probes_and_decodes_like_any_other(clips: dict[str, Path]) -> None:
    first = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "0", "-show_entries", "stream=codec_type",
                            "-of", "csv=p=0", str(clips["audio_first"])], capture_output=True, text=True, check=True)
    assert first.stdout.strip() == "audio"                              # the file really is audio-first
    normal, audio_first = media.probe(clips["video_first"]), media.probe(clips["audio_first"])
    assert (audio_first.width, audio_first.height, audio_first.fps, audio_first.has_audio) == (160, 120, 25.0, True)
    assert audio_first.duration == pytest.approx(normal.duration, abs=0.05)
    decoder = media.UnitDecoder(clips["audio_first"], 0.0, 2.0, 25, 16000, audio_first)
    assert sum(1 for _ in decoder.frames()) == 50
    assert decoder.audio(0.5, 1.5).std() > 0.05                         # the tone, not silence


def test_frames_decode_the_same_from_a_path_and_from_bytes(clips: dict[str, Path]) -> None:
    path = clips["audio_first"]
    from_path = list(media.frames(path))
    from_bytes = list(media.frames(path.read_bytes()))
    assert len(from_path) == len(from_bytes) == 50
    assert [f.index for f in from_bytes] == list(range(50))
    assert all(np.array_equal(a.image, b.image) for a, b in zip(from_path, from_bytes))
    assert from_bytes[0].image.shape == (120, 160, 3) and from_bytes[10].time == pytest.approx(0.4)
    picked = list(media.frames(path.read_bytes(), keep={3, 7}.__contains__, stop=8))
    assert [f.index for f in picked] == [3, 7] and np.array_equal(picked[1].image, from_path[7].image)
    near = media.frames_at(path.read_bytes(), [0.0, 1.0])
    assert len(near) == 2 and np.array_equal(near[1], from_path[25].image)
    audio = media.decode_audio(path.read_bytes(), 16000)
    assert audio is not None and abs(len(audio) - 32000) < 2048


def test_unusable_media_raises_media_error_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(media.MediaError) as missing:
        media.probe(tmp_path / "nope.mp4")
    assert missing.value.reason == "missing_file"
    with pytest.raises(media.MediaError) as junk:
        list(media.frames(b"this is not a video" * 50, origin="shard u.tar: clip-1"))
    assert junk.value.reason == "unreadable" and "clip-1" in str(junk.value)
    wav = media.wav_bytes(np.zeros(800, np.float32), 8000)
    assert media.decode_audio(wav, 16000) is not None
    with pytest.raises(media.MediaError, match="no video stream"):
        media.probe(wav)


def test_png_npy_and_wav_round_trip() -> None:
    mask = (np.arange(64 * 48).reshape(48, 64) % 256).astype(np.uint8)
    assert np.array_equal(media.read_png(media.png_bytes(mask)), mask)
    rows = np.random.default_rng(0).normal(size=(5, 2, 3)).astype(np.float32)
    assert np.array_equal(media.read_npy(media.npy_bytes(rows)), rows)
    tone = (0.5 * np.sin(np.arange(1600) / 5)).astype(np.float32)
    back = media.read_wav(media.wav_bytes(tone, 16000), 16000)
    assert np.abs(back - tone).max() < 1e-3
    with pytest.raises(media.MediaError, match="expected 8000 Hz"):
        media.read_wav(media.wav_bytes(tone, 16000), 8000)
