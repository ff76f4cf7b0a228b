"""Clips stream out of the decode pass, and a pass resumed inside a unit makes what an unbroken pass makes.

The media tests build a 13.5 s source with scene cuts from three clips of ../shared/media/video (a
still talker; a talker faded in from grey, so a face appears without a cut; a talker sliding across
a grey frame, so the face leaves its crop) and decode it with a short `segment.max_seconds`, so its
pieces end for every reason: max_length, cut, face_appeared, face_moved and end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray
from ray import cloudpickle

from conftest import RAY_VARIABLE
from vividhead.media import frames, read_wav
from vividhead.models.face_detect import make_face_detector
from vividhead.pipelines import extract
from vividhead.pipelines.config import BuildConfig
from vividhead.pipelines.extract import UnitExtractor, extract_rows, rows_as_made, unit_dataset
from vividhead.pipelines.filter_config import SegmentConfig
from vividhead.pipelines.ray_setup import start_ray, stop_ray
from vividhead.pipelines.records import Clip, Frame, Source
from vividhead.pipelines.scenes import SceneCuts, memory_frames, warm_up_from
from vividhead.pipelines.units import WorkUnit, plan_source, resume_point

FPS = 25
CONFIG = BuildConfig.model_validate({"segment": {"min_seconds": 1.0, "max_seconds": 3.0},
                                     "encode": {"preset": "ultrafast"}})
DECODE_STAGES = ("segment", "face", "flow", "visibility")


def _scenes_source(video: Path, out: Path) -> Path:
    """Three scenes, 640x640 at 25 fps with AAC audio: still, faded in from grey, sliding (ffmpeg, argument list)."""
    square = "fps=25,scale=640:640:force_original_aspect_ratio=increase,crop=640:640,setsar=1"
    graph = (f"[0:v]{square}[v0];[1:v]{square},fade=in:st=1.5:d=1.5:color=0x606060[v1];"
             "color=c=0x606060:s=640x640:r=25:d=4.5[bg];[2:v]fps=25,scale=360:360,setsar=1[fg];"
             "[bg][fg]overlay=x='20+t*55':y=140:shortest=1,setsar=1[v2];"
             + "".join(f"[{i}:a]aresample=44100[a{i}];" for i in range(3))
             + "[v0][a0][v1][a1][v2][a2]concat=n=3:v=1:a=1[v][a]")
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y",
                    "-t", "4", "-i", str(video / "videoretalking_face1.mp4"),
                    "-t", "5", "-i", str(video / "videoretalking_face3.mp4"),
                    "-t", "4.5", "-i", str(video / "liveportrait_d14.mp4"),
                    "-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                    "-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-c:a", "aac", str(out)], check=True)
    return out


@pytest.fixture(scope="module")
def unit(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> WorkUnit:
    path = _scenes_source(media_dir / "video", tmp_path_factory.mktemp("scenes") / "scenes.mp4")
    source = Source(str(path), str(path), md5=hashlib.md5(path.read_bytes()).hexdigest())
    (work,) = plan_source(source, str(path), CONFIG)
    return work


@pytest.fixture(scope="module")
def detector():
    face = make_face_detector("mediapipe", None)
    yield face
    face.close()


@pytest.fixture(scope="module")
def whole(unit: WorkUnit, detector, tmp_path_factory: pytest.TempPathFactory) -> list[Clip]:
    """The unbroken pass over the unit."""
    return list(UnitExtractor(unit, CONFIG, tmp_path_factory.mktemp("whole"), detector).run())


def _row(clip: Clip) -> dict[str, Any]:
    """A clip as the manifest row the resume helper reads."""
    return {"key": clip.key, "status": clip.status, "start": clip.start, "end": clip.end, **clip.metrics}


def _decisions(clip: Clip) -> dict[str, Any]:
    metrics = {name: value for name, value in clip.metrics.items() if name.split(".")[0] in DECODE_STAGES}
    return {"key": clip.key, "status": clip.status, "reject": (clip.reject_stage, clip.reject_reason),
            "n_frames": clip.n_frames, "crop_box": clip.crop_box, **metrics}


def _assert_same_clip(resumed: Clip, unbroken: Clip) -> None:
    """Same key, decision and metrics (floats to 1e-6: DIS flow is not bit-exact run to run), frames and audio."""
    got, want = _decisions(resumed), _decisions(unbroken)
    assert got.keys() == want.keys(), unbroken.key
    for name, value in want.items():
        if isinstance(value, float):
            assert got[name] == pytest.approx(value, rel=1e-6, abs=1e-9), (unbroken.key, name)
        else:
            assert got[name] == value, (unbroken.key, name)
    if unbroken.status == "kept":
        assert np.array_equal(np.stack([f.image for f in frames(resumed.video_path)]),
                              np.stack([f.image for f in frames(unbroken.video_path)])), unbroken.key
        assert np.array_equal(read_wav(resumed.wav_path, 16000), read_wav(unbroken.wav_path, 16000)), unbroken.key


def test_a_pass_resumed_at_each_piece_boundary_makes_the_same_pieces(unit, detector, whole, tmp_path) -> None:
    reasons = [clip.metrics["segment.end_reason"] for clip in whole]
    assert {"max_length", "cut", "face_appeared", "face_moved"} <= set(reasons[:-1]) and reasons[-1] == "end"
    for done in range(1, len(whole)):
        point = resume_point(unit, [_row(clip) for clip in whole[:done]], FPS)
        assert not point.complete and point.at == pytest.approx(whole[done].metrics["segment.piece_start"])
        assert point.at_cut == (reasons[done - 1] == "cut") == whole[done].metrics["segment.starts_at_cut"]
        resumed = list(UnitExtractor(unit.resumed(point), CONFIG, tmp_path / str(done), detector).run())
        assert len(resumed) == len(whole) - done
        for again, clip in zip(resumed, whole[done:]):
            _assert_same_clip(again, clip)


def test_scene_cuts_after_a_warm_up_match_the_unbroken_pass() -> None:
    """Every resume frame of a synthetic sequence with flashes and cuts closer than scene_min_seconds."""
    rng = np.random.default_rng(7)
    colours, colour = [], rng.integers(0, 255, 3)
    for _ in range(160):
        if rng.random() < 0.12:
            colour = rng.integers(0, 255, 3)
        colours.append(colour)
    images = [np.broadcast_to(c.astype(np.uint8), (8, 8, 3)).copy() for c in colours]
    config = SegmentConfig(scene_min_seconds=0.4)
    memory = memory_frames(config, FPS)

    def cuts_from(start: int) -> list[bool]:
        detector = SceneCuts(config, FPS)
        return [detector.update(Frame(i, images[i], images[i])) for i in range(start, len(images))]

    unbroken = cuts_from(0)
    reported = [i for i, cut in enumerate(unbroken) if cut]
    assert len(reported) > 5
    naive_mismatch = False
    for resume in range(1, len(images)):
        last_cut = max((i for i in reported if i < resume), default=None)
        start = warm_up_from(resume, last_cut, 0, memory)
        assert cuts_from(start)[resume - start:] == unbroken[resume:], resume
        naive = max(0, resume - memory)
        naive_mismatch |= cuts_from(naive)[resume - naive:] != unbroken[resume:]
    assert naive_mismatch        # warming up without the last cut is not enough: the check can fail


def _piece(key: str, start: float, end: float, reason: str, status: str = "kept") -> dict[str, Any]:
    return {"key": key, "status": status, "start": start, "end": end, "segment.piece_start": start,
            "segment.end_reason": reason}


def test_resume_point_follows_the_unbroken_run_of_committed_pieces() -> None:
    source = Source("s", "s", md5="0" * 32)
    unit = WorkUnit("u", source, "s.mp4", 600.0, 1200.0, False, None)
    a = _piece("a", 600.0, 612.0, "max_length")
    b = _piece("b", 612.0, 612.4, "cut")
    c = _piece("c", 612.4, 640.0, "face_moved")
    d = _piece("d", 640.0, 1200.0, "end")

    nothing = resume_point(unit, [], FPS)
    assert (nothing.at, nothing.complete, nothing.keys) == (None, False, frozenset())
    point = resume_point(unit, [c, a, b], FPS)                       # any arrival order
    assert (point.at, point.at_cut, point.last_cut, point.complete) == (640.0, False, 612.4, False)
    assert point.keys == {"a", "b", "c"}
    point = resume_point(unit, [b, a], FPS)                          # the next piece starts at a cut
    assert (point.at, point.at_cut, point.last_cut) == (612.4, True, None)
    point = resume_point(unit, [a, c], FPS)                          # a gap: c is made again
    assert (point.at, point.keys) == (612.0, {"a", "c"})
    point = resume_point(unit, [a, {**b, "status": "failed"}, c], FPS)
    assert point.at == 612.0 and point.keys == {"a", "c"}
    half_frame_off = {**b, "segment.piece_start": 612.0 + 0.4 / FPS}
    assert resume_point(unit, [a, half_frame_off], FPS).at == 612.4
    assert resume_point(unit, [c, d, b, a], FPS).complete
    skipped = {"key": "u_source", "status": "skipped", "start": 0.0, "end": 0.0}
    assert resume_point(unit, [skipped], FPS).complete
    resumed = unit.resumed(resume_point(unit, [a, b, c], FPS))
    assert (resumed.resume_at, resumed.resume_starts_at_cut, resumed.resume_last_cut) == (640.0, False, 612.4)
    assert resumed.unit_id == unit.unit_id


def test_extract_rows_yields_each_clip_when_its_piece_ends(unit, tmp_path, monkeypatch) -> None:
    short = dataclasses.replace(unit, end=5.0)                    # max_length at 3.0, cut at 4.04, end
    staging = tmp_path / "staging"
    seen = []
    for row in extract_rows({"unit": pickle.dumps(short)}, CONFIG, str(staging)):
        seen.append((pickle.loads(row["clip"]), row["pieces"], sorted(p.name for p in staging.rglob("*.wav"))))
    clips = [clip for clip, _, _ in seen]
    assert [pieces for _, pieces, _ in seen] == [0] * (len(seen) - 1) + [len(seen)] and len(seen) >= 3
    for n, (_, _, wavs) in enumerate(seen):      # when a row is yielded, no later piece has been written yet
        assert wavs == sorted(f"{c.key}.wav" for c in clips[: n + 1] if c.status == "kept")

    finish = UnitExtractor._finish
    count = {"pieces": 0}

    def failing_second(self, piece, end, reason):
        count["pieces"] += 1
        if count["pieces"] == 2:
            raise RuntimeError("disk on fire")
        return finish(self, piece, end, reason)

    monkeypatch.setattr(UnitExtractor, "_finish", failing_second)
    rows = list(extract_rows({"unit": pickle.dumps(short)}, CONFIG, str(tmp_path / "again")))
    first, failed = (pickle.loads(row["clip"]) for row in rows)
    assert [row["pieces"] for row in rows] == [0, 2]
    assert first.key == clips[0].key and failed.status == "failed" and failed.reject_reason == "error"
    assert (failed.start, failed.end) == (first.end, short.end) and "disk on fire" in failed.reject_detail


def _wait_for(path: Path, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return path.exists()


@pytest.fixture(scope="module")
def local_ray():
    """The session's Ray, joined by this process; it ships this module's functions by value (its workers
    cannot import a test module)."""
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    start_ray(os.environ.get(RAY_VARIABLE), 2)
    yield
    stop_ray()


def test_ray_data_hands_each_clip_to_the_driver_while_its_unit_is_decoded(unit, local_ray, tmp_path) -> None:
    """The task waits for the driver to acknowledge each row before making the next piece.

    If Ray Data held the rows back until the task ended (one block per task), the driver could not
    acknowledge the first row while the task waits, and `acknowledged` would be False.
    """
    short, staging, acks = dataclasses.replace(unit, end=5.0), str(tmp_path / "staging"), tmp_path / "acks"
    acks.mkdir()

    def gated(row: dict[str, Any]):
        for n, out in enumerate(extract_rows(row, CONFIG, staging)):
            yield {**out, "acknowledged": n == 0 or _wait_for(acks / str(n - 1), 60)}

    rows = []
    for row in rows_as_made(unit_dataset([short]).flat_map(gated, num_cpus=1)):
        (acks / str(len(rows))).touch()
        rows.append(row)
    assert len(rows) >= 3 and all(row["acknowledged"] for row in rows)
    assert [row["pieces"] for row in rows] == [0] * (len(rows) - 1) + [len(rows)]


def test_without_row_blocks_ray_data_holds_a_task_s_rows_back(local_ray, tmp_path) -> None:
    """The control: under the default block size the first row arrives only after its task ended."""
    acks = tmp_path / "acks"
    acks.mkdir()

    def gated(row: dict[str, Any]):
        yield {"n": 0, "acknowledged": True}
        yield {"n": 1, "acknowledged": _wait_for(acks / "0", 3)}

    rows = []
    for row in rows_as_made(ray.data.from_items([{"unit": 0}]).flat_map(gated, num_cpus=1)):
        (acks / str(row["n"])).touch()
        rows.append(row)
    assert [row["acknowledged"] for row in rows] == [True, False]
    assert extract.ROW_PER_BLOCK < len(pickle.dumps(rows[0]))
