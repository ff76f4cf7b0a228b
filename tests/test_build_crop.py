"""The face crop rule shared by the build (stage 5) and the stream's reference image, and stage reasons."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import run_vividhead
from vividhead.models.face_detect import Face, crop_box, main_face


def test_crop_box_centres_scales_and_clamps_to_the_frame() -> None:
    face = Face(300, 200, 400, 280, 0.9)                       # side 100 (the larger side), centre (350, 240)
    assert crop_box(face, 1280, 720, 2.0) == (250, 140, 200)
    assert crop_box(Face(0, 0, 100, 100, 0.9), 1280, 720, 2.0) == (0, 0, 200)          # shifted inside the frame
    assert crop_box(Face(1200, 650, 1280, 720, 0.9), 1280, 720, 2.0) == (1120, 560, 160)
    assert crop_box(Face(100, 100, 600, 600, 0.9), 1280, 720, 2.0) == (0, 0, 720)      # never past the shorter side


def test_main_face_is_the_largest_by_side_times_score() -> None:
    small_sure, large_unsure, large = Face(0, 0, 50, 50, 1.0), Face(0, 0, 100, 100, 0.4), Face(0, 0, 90, 90, 0.9)
    assert main_face([small_sure, large_unsure, large]) is large


def test_reference_crop_is_the_build_crop(monkeypatch: pytest.MonkeyPatch) -> None:
    from vividhead.pipelines.filter_config import FaceConfig
    from vividhead.inference import reference
    from vividhead.models import face_detect

    faces = [Face(500, 100, 540, 150, 0.95), Face(40, 60, 200, 240, 0.8)]

    class Fixed:
        def __init__(self, *args) -> None:
            pass

        def __call__(self, rgb: np.ndarray) -> list[Face]:
            return faces

        def close(self) -> None:
            pass

    monkeypatch.setattr(face_detect, "MediapipeFaceDetector", Fixed)
    rgb = np.zeros((400, 640, 3), np.uint8)
    expected = crop_box(faces[1], 640, 400, FaceConfig().crop_scale)
    assert reference.face_crop_box(rgb) == expected == (0, 0, 360)
    assert reference.face_crop_box(rgb, crop_scale=1.5) == crop_box(faces[1], 640, 400, 1.5)
    # no resolution floor for a reference: a tiny face still gives its crop
    faces[:] = [Face(10, 10, 14, 14, 0.9)]
    assert reference.face_crop_box(rgb) == (8, 8, 8)


def test_clip_stage_reason_defaults_to_its_mode() -> None:
    from vividhead.pipelines.records import ClipStage

    class Plain(ClipStage):
        name = "plain"

    class Off(ClipStage):
        name = "off"

        def mode(self):
            return "skipped"

    assert Plain().reason() == "runs with its embedded default" and Off().reason() == "skipped"


def test_check_weights_prints_each_stage_reason(tmp_path) -> None:
    config = tmp_path / "build.yaml"
    config.write_text(f"weights:\n  syncnet: {str(tmp_path / 'absent.model')!r}\n", encoding="utf-8")
    lines = {line.split()[0]: line for line in run_vividhead("build", "--check-weights", "--config", config).stdout.splitlines()}
    assert "silero-vad" in lines["speech"]
    assert "absent.model" in lines["sync"] and "weight-free lip-sync check" in lines["sync"]
    assert "disabled" not in lines["occlusion"] and "mediapipe hands" in lines["occlusion"]
