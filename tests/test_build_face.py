"""Face detection (mediapipe default, SCRFD from a local ONNX in the real signature) and the single decode pass."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from tiny_models import write_tiny_scrfd
from vividhead.pipelines.config import BuildConfig
from vividhead.demo import Take, astronaut, write_take
from vividhead.models.face_detect import MediapipeFaceDetector, ScrfdFaceDetector, make_face_detector
from vividhead.pipelines.extract import UnitExtractor
from vividhead.pipelines.records import Source
from vividhead.pipelines.units import plan_source


@pytest.fixture(scope="module")
def take(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("take") / "take.mp4"
    write_take(Take("take", ((5.4, "front"),), 190.0, 2), path, astronaut())
    return path


def test_mediapipe_finds_the_astronaut() -> None:
    faces = MediapipeFaceDetector()(astronaut())
    assert len(faces) == 1
    face = faces[0]
    assert 160 < face.x0 < 190 and 250 < face.x1 < 290 and face.score > 0.8


def test_scrfd_decodes_the_published_output_layout(tmp_path: Path) -> None:
    path = write_tiny_scrfd(tmp_path / "scrfd.onnx", box=(192, 192, 448, 448))
    detector = make_face_detector("auto", path)
    assert isinstance(detector, ScrfdFaceDetector) and detector.name == "scrfd"
    image = np.zeros((720, 1280, 3), np.uint8)               # letterboxed into 640x640 at scale 0.5
    (face,) = detector(image)
    assert np.allclose([face.x0, face.y0, face.x1, face.y1], [384, 384, 896, 896], atol=1)
    assert face.score == pytest.approx(0.9)
    with pytest.raises(FileNotFoundError, match="scrfd"):
        make_face_detector("scrfd", None)
    assert make_face_detector("auto", None).name == "mediapipe"


def _unit(path: Path):
    source = Source(str(path), str(path), md5=hashlib.md5(path.read_bytes()).hexdigest())
    (unit,) = plan_source(source, str(path), BuildConfig())
    return unit


def test_decode_pass_keeps_the_take_with_its_track(take: Path, tmp_path: Path) -> None:
    clips = UnitExtractor(_unit(take), BuildConfig(), tmp_path, make_face_detector("mediapipe", None)).run()
    (clip,) = clips
    assert clip.status == "kept", clip.reject_detail
    assert clip.n_frames == 135 and clip.metrics["face.detector"] == "mediapipe"
    assert clip.face_track.shape == (135, 4) and np.isfinite(clip.face_track).all()
    x0, y0, x1, y1 = np.nanmean(clip.face_track, axis=0)
    assert 150 < (x0 + x1) / 2 < 360 and 150 < (y0 + y1) / 2 < 360          # the face stays centred in the crop
    assert Path(clip.video_path).exists() and Path(clip.wav_path).exists() and "mask.png" in clip.outputs
    assert clip.metrics["visibility.face_ratio"] == 1.0 and clip.metrics["flow.max_residual"] < 0.05


def test_decode_pass_with_scrfd_weights_crops_where_scrfd_says(take: Path, tmp_path: Path) -> None:
    detector = make_face_detector("auto", write_tiny_scrfd(tmp_path / "scrfd.onnx", box=(256, 192, 384, 320)))
    config = BuildConfig.model_validate({"face": {"search_seconds": 0.0}})
    clips = UnitExtractor(_unit(take), config, tmp_path / "staging", detector).run()
    (clip,) = clips
    assert clip.metrics["face.detector"] == "scrfd"
    # the 960x540 frame is scaled by 640/960: the constant box maps to (384, 288)-(576, 480), side 192;
    # the 384 px crop centred on it would pass the frame's bottom edge, so it is shifted up to fit
    x, y, side = clip.crop_box
    assert side == 384 and x + side / 2 == pytest.approx(480, abs=1) and y == 540 - 384


def test_long_source_is_split_into_units_decoded_separately(take: Path, tmp_path: Path) -> None:
    config = BuildConfig.model_validate({"segment": {"unit_seconds": 3.0, "min_seconds": 1.0}})
    source = Source(str(take), str(take), md5=hashlib.md5(take.read_bytes()).hexdigest())
    units = plan_source(source, str(take), config)
    assert [(u.start, round(u.end, 2)) for u in units] == [(0.0, 3.0), (3.0, 5.4)]
    assert len({u.unit_id for u in units}) == 2
    detector = make_face_detector("mediapipe", None)
    clips = [c for u in units for c in UnitExtractor(u, config, tmp_path / u.unit_id, detector).run()]
    assert [(c.start, c.end, c.status) for c in clips] == [(0.0, 3.0, "kept"), (3.0, 5.4, "kept")]
    assert sum(c.n_frames for c in clips) == 135                      # no frame lost or doubled at the seam
