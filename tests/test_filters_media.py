"""The filter stages' embedded defaults (no weights) on the real clips in ../shared/media/video.

Each source is normalised with ffmpeg to a 512x512 25 fps clip and a 16 kHz mono wav (a stand-in for
the build's staging), then run through occlusion, speech and sync as the pipeline chains them.
Expected decisions follow ../shared/media/SOURCES.md: the interviews are kept, the music clip is
rejected (no speech, and not verified in sync), a copy of a kept clip with its audio delayed by 0.5 s is
not verified by sync, and the stage performance (hands and a microphone near the face) does not survive.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from vividhead.pipelines.filter_config import OcclusionConfig, SpeechConfig, SyncConfig
from vividhead.pipelines.records import Clip, Source
from vividhead.pipelines.stages import STAGES
from vividhead.weights import Weights

CLIP_STAGES = {stage.name: stage.model for stage in STAGES if stage.model}   # the model stages, in table order

SHARED = Path(os.environ.get("VIVIDHEAD_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
VIDEO = SHARED / "media" / "video"

pytestmark = pytest.mark.skipif(not VIDEO.is_dir(), reason=f"shared test media not found at {VIDEO}")

# name -> (source file, seconds to use or None for all, audio delay in seconds)
CASES = {
    "interview_man": ("videoretalking_face1.mp4", None, 0.0),
    "interview_woman": ("videoretalking_face3.mp4", None, 0.0),
    "music": ("liveportrait_d14.mp4", 8.0, 0.0),
    "interview_man_delayed": ("videoretalking_face1.mp4", None, 0.5),
    "stage_performance": ("facerec_short_hamilton_clip.mp4", None, 0.0),
}


def _stage(source: Path, out: Path, seconds: float | None, delay: float) -> tuple[Path, Path]:
    video, wav = out / f"{out.name}.mp4", out / f"{out.name}.wav"
    limit = ["-t", str(seconds)] if seconds else []
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), *limit, "-an", "-vf",
                    "fps=25,scale=512:512:force_original_aspect_ratio=increase,crop=512:512",
                    "-c:v", "libx264", "-preset", "veryfast", str(video)], check=True)
    shift = ["-af", f"adelay={int(delay * 1000)}:all=1"] if delay else []
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(source), *limit, "-vn", *shift,
                    "-ac", "1", "-ar", "16000", "-c:a", "pcm_s16le", str(wav)], check=True)
    return video, wav


@pytest.fixture(scope="module")
def decided(tmp_path_factory) -> dict[str, Clip]:
    """Every case run through occlusion, speech and sync with the embedded defaults."""
    stages = [CLIP_STAGES["occlusion"](OcclusionConfig(), Weights()),
              CLIP_STAGES["speech"](SpeechConfig(), Weights()),
              CLIP_STAGES["sync"](SyncConfig(), Weights())]
    for stage in stages:
        assert stage.mode() == "default"
        stage.setup()
    clips = {}
    for name, (file, seconds, delay) in CASES.items():
        video, wav = _stage(VIDEO / file, tmp_path_factory.mktemp(name), seconds, delay)
        clip = Clip(key=name, source=Source(source_id=name, uri=str(VIDEO / file)), start=0.0,
                    end=seconds or 0.0, video_path=str(video), wav_path=str(wav))
        for stage in stages:
            result = stage.process(clip)   # every stage runs, so each one's decision can be checked
            clip.apply(stage.name, result)
            clip.metrics[f"{stage.name}.reject"] = result.reject
        clips[name] = clip
    for stage in stages:
        stage.teardown()
    return clips


@pytest.mark.parametrize("name", ["interview_man", "interview_woman"])
def test_interviews_are_kept(decided, name):
    clip = decided[name]
    assert clip.status == "kept", (clip.reject_stage, clip.reject_detail, clip.metrics)
    assert clip.metrics["speech.speech_ratio"] >= 0.55
    assert clip.metrics["sync.method"] == "proxy" and clip.metrics["sync.verdict"] in ("in_sync", "unsure")
    assert clip.metrics["occlusion.occluded_ratio"] == 0.0
    assert "sync.lse_c" not in clip.metrics      # the proxy is never reported as LSE


def test_music_clip_is_rejected_for_speech_and_sync(decided):
    clip = decided["music"]
    assert clip.status == "rejected" and clip.reject_stage == "speech" and clip.reject_reason == "no_speech"
    assert clip.metrics["speech.speech_ratio"] < 0.1
    assert clip.metrics["sync.verified"] is False


def test_delayed_audio_is_not_verified_by_sync(decided):
    clip = decided["interview_man_delayed"]
    assert clip.metrics["sync.verified"] is False and clip.metrics["sync.verdict"] in ("unsure", "out_of_sync")
    # 0.5 s = 12.5 frames late: the measured lag moves by about that much
    assert abs(clip.metrics["sync.proxy_lag"] - decided["interview_man"].metrics["sync.proxy_lag"] - 12.5) <= 2


def test_stage_performance_shows_hands_and_is_rejected(decided):
    # one 10 s clip across its camera cuts (the build would already split it into pieces too short to keep)
    clip = decided["stage_performance"]
    assert clip.status == "rejected" and clip.reject_stage in {"occlusion", "sync"}
    assert clip.metrics["occlusion.hand_frames"] >= 5 and clip.metrics["occlusion.occluded_ratio"] > 0
    assert clip.metrics["sync.verified"] is False     # no face mesh across the cuts: not verified, no evidence to reject
