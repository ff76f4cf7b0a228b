"""The face crop follows real head motion and keeps one visible speaker: `vividhead build` on real dev footage.

One build (embedded defaults) over three cases made from ../shared/media/dev (skipped when it is absent):
- a webcast host who moves naturally while talking (spacex): kept whole, drift measured from the start;
- a weekly address that stands still for 8 s, then slides out of the frame at a known speed (made with
  ffmpeg): the clip is cut where the face has moved `face.max_drift` of the crop side, not rejected;
- a split screen of two news speakers (made with ffmpeg): rejected as `second_face`.
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from conftest import run_vividhead, shared_path
from vividhead.pipelines.config import BuildConfig
from vividhead.evaluation.curation_cases import moving, side_by_side
from vividhead.models.face_detect import Face, MediapipeFaceDetector, crop_box, main_face
from vividhead.pipelines import visibility
from vividhead.pipelines.face_track import FaceTrack
from vividhead.pipelines.filter_config import FaceConfig, VisibilityConfig
from vividhead.pipelines.framing import comparable_faces, drift, follow
from vividhead.pipelines.records import Frame

DEV = shared_path() / "media" / "dev"
needs_dev = pytest.mark.skipif(not (DEV / "DEV.md").is_file(), reason=f"dev footage not found at {DEV}")

STILL_SECONDS, SPEED = 8.0, 0.25        # the address stands still, then slides a quarter frame width per second
NATURAL = "eknim__video-retalking__spacex.mp4"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[dict[str, list[dict]], Path]:
    folder = tmp_path_factory.mktemp("framing")
    cases = folder / "cases"
    cases.mkdir()
    moving(DEV / "tanshuai0219__EDTalk__uncrop_Obama.mp4", STILL_SECONDS, SPEED, cases / "leaves.mp4", 16.0)
    side_by_side(DEV / "yerfor__MimicTalk__German_20s.mp4", DEV / "yerfor__MimicTalk__Trump_10s.mp4",
                 cases / "split_screen.mp4", 10.0)
    sources = folder / "sources.yaml"
    sources.write_text(yaml.safe_dump({"sources": [{"path": str(cases)}, {"path": str(DEV / NATURAL)}]}))
    config = folder / "build.yaml"
    config.write_text(yaml.safe_dump({"weights_manifest": str(folder / "no-weights.yaml"),
                                      "occlusion": {"enabled": False}, "annotate": {"enabled": False}}))
    (folder / "no-weights.yaml").write_text("{}\n")
    out = folder / "out"
    run_vividhead("build", "--sources", sources, "--out", out, "--config", config, "--no-progress", "--workers", "2")
    rows: dict[str, list[dict]] = {}
    for row in pq.read_table(out / "manifest.parquet").to_pylist():
        rows.setdefault(Path(row["uri"]).name, []).append(row)
    for clips in rows.values():
        clips.sort(key=lambda row: row["start"] or 0.0)
    return rows, cases


@needs_dev
def test_a_naturally_moving_speaker_is_kept_whole(built):
    rows, _ = built
    [row] = rows[NATURAL]
    assert row["status"] == "kept", (row["reject_reason"], row["reject_detail"])
    assert row["segment.end_reason"] == "end" and row["duration"] > 6.5
    assert 0.03 < row["face.max_drift"] < BuildConfig().face.max_drift     # it moves, and stays in its crop


@needs_dev
def test_a_face_that_leaves_the_frame_is_cut_when_it_has_moved_max_drift(built):
    rows, cases = built
    first = rows["leaves.mp4"][0]
    # Where the cut should be: the crop side follows from the first frame's face, the drift limit is a
    # share of it, and the picture slides SPEED frame widths per second after STILL_SECONDS.
    with av.open(str(cases / "leaves.mp4")) as container:
        rgb = next(container.decode(video=0)).to_ndarray(format="rgb24")
    detector = MediapipeFaceDetector()
    face = main_face(detector(rgb))
    detector.close()
    config = BuildConfig()
    side = crop_box(face, rgb.shape[1], rgb.shape[0], config.face.crop_scale)[2]
    expected = STILL_SECONDS + config.face.max_drift * side / (SPEED * rgb.shape[1])
    assert first["segment.end_reason"] == "face_moved"
    assert abs(first["end"] - expected) <= 0.3, (first["end"], expected)
    assert first["face.moved_at"] == pytest.approx(first["end"] - first["start"], abs=0.05)
    assert first["status"] == "kept", (first["reject_reason"], first["reject_detail"])


@needs_dev
def test_a_split_screen_with_two_speakers_is_rejected(built):
    rows, _ = built
    [row] = rows["split_screen.mp4"]
    assert row["status"] == "rejected" and row["reject_stage"] == "visibility"
    assert row["reject_reason"] == "second_face" and row["visibility.second_face_ratio"] > 0.9
    assert "second face" in row["reject_detail"]


# ------------------------------------------------------------------------------- the pure rules
def _face(cx: float, cy: float, side: float) -> Face:
    return Face(cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2, 0.9)


def test_drift_is_measured_from_the_start_not_the_crop_centre():
    start = _face(380, 256, 200)                       # off-centre from the start (a clamped crop)
    assert drift(start, start, 512) == 0.0
    assert drift(_face(380, 384, 200), start, 512) == pytest.approx(0.25)


def test_the_track_follows_the_speaker_not_the_face_nearest_the_centre():
    speaker, passer_by = _face(400, 260, 200), _face(250, 250, 120)
    assert follow([passer_by, speaker], _face(390, 255, 200), 512) is speaker
    assert follow([passer_by, speaker], None, 512) is passer_by      # before the first detection: the centre
    assert follow([], speaker, 512) is None


def test_comparable_faces_counts_other_faces_of_at_least_the_share():
    crop = (500, 100, 400)                              # x, y, side in frame pixels
    speaker = _face(700, 300, 200)
    assert comparable_faces([speaker], crop, 0.5) == 0
    assert comparable_faces([speaker, _face(200, 300, 180)], crop, 0.5) == 1    # split screen
    assert comparable_faces([speaker, _face(200, 300, 60)], crop, 0.5) == 0     # a small face behind
    assert comparable_faces([_face(200, 300, 180)], crop, 0.5) == 0             # no speaker in the crop


def test_face_track_marks_where_the_face_moved_and_stops_measuring():
    config = FaceConfig(detect_fps=25.0)
    track = FaceTrack(config, 25.0, {})
    for k, cx in enumerate([256, 270, 300, 350, 390, 420]):    # drifts 0 .. 0.32 of 512
        track.update(Frame(k, np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8),
                           crop=np.zeros((8, 8, 3), np.uint8), clip_index=k, _faces=[_face(cx, 256, 200)]))
    result = track.finish()
    assert track.moved and result.metrics["moved_at"] == pytest.approx(4 / 25)       # 134/512 = 0.26 > 0.25
    assert result.metrics["max_drift"] == pytest.approx(94 / 512) and result.reject is None


def test_visibility_rejects_a_second_face_above_the_share_of_samples():
    config = VisibilityConfig()
    assert visibility.decide({"face_ratio": 1.0, "second_face_ratio": 0.2}, config) is None
    reason, detail = visibility.decide({"face_ratio": 1.0, "second_face_ratio": 0.5}, config)
    assert reason == "second_face" and "50%" in detail and "max_second_face_ratio 0.2" in detail
    assert visibility.decide({"face_ratio": 0.5, "second_face_ratio": 0.5}, config)[0] == "face_missing"
    assert visibility.decide({"face_ratio": 1.0, "second_face_ratio": 1.0}, VisibilityConfig(enabled=False)) is None
