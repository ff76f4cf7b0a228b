"""Importers of the published dataset lists: excerpts in each documented format, quirks included, expand
into exactly the listed videos, ranges in seconds and boxes; `vividhead sources --json` prints them.

The real HDTF lists (github.com/MRzzm/HDTF, no licence, so not vendored) are read when
VIVIDHEAD_HDTF_LISTS names their `HDTF_dataset` folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from vividhead.cli import main
from vividhead.pipelines.lists import ListError, expand_list
from vividhead.pipelines.lists.common import youtube_id
from vividhead.pipelines.records import FaceBox

YT = "https://www.youtube.com/watch?v="


def _write(path: Path, text: str, bom: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def test_hdtf_ranges_crops_and_quirks(tmp_path):
    _write(tmp_path / "WDA_video_url.txt", "KimSchrier https://www.youtube.com/watch?v=YLN321kYoFM\n"
           "JimmyGomez https://www.youtube.com/watch?v=1_HfHtBlQKs&t=138s  \nNoTimes https://www.youtube.com/watch?v=abcdefghijk\n",
           bom=True)
    _write(tmp_path / "WDA_annotion_time.txt", "KimSchrier.mp4 00:02-00:30 01:00-01:20 \nJimmyGomez.mp4 00:05-01:35\n")
    _write(tmp_path / "WDA_crop_wh.txt", "KimSchrier_0.mp4 483 390 0 390\nJimmyGomez_0.mp4 412 599 10 599\n")
    _write(tmp_path / "WDA_resolution.txt", "KimSchrier.mp4 720\nJimmyGomez.mp4 1080\n")
    listed = expand_list("hdtf", tmp_path)
    assert [youtube_id(v.video) for v in listed] == ["YLN321kYoFM", "1_HfHtBlQKs"]     # NoTimes has no range
    kim, jimmy = listed
    assert kim.ranges == [(2.0, 30.0), (60.0, 80.0)]
    assert kim.boxes == [FaceBox(483, 0, 873, 390, None, 720.0), None]              # range 1 has no crop line
    assert jimmy.ranges == [(5.0, 95.0)] and jimmy.boxes[0].in_frame(1920, 1080) == (412, 10, 1011, 609)


def test_voxceleb2_frames_at_25fps_and_normalised_boxes(tmp_path):
    header = "Identity  : \tid00012\nReference : \t21Uxsk56VDQ\nOffset    : \t1\nFV Conf   : \t16.975\t(1)\n" \
             "ASD Conf  : \t4.350 \n\nFRAME \tX \tY \tW \tH \n"
    _write(tmp_path / "id00012/21Uxsk56VDQ/00001.txt", header + "000096 \t0.567 \t0.263 \t0.137 \t0.243 \n"
           "000097 \t0.568 \t0.263 \t0.137 \t0.243 \n000220 \t0.5 \t0.2 \t0.1 \t0.2 \n")
    _write(tmp_path / "id00012/21Uxsk56VDQ/00002.txt", header + "000300 \t0.1 \t0.2 \t0.3 \t0.4 \n000349 \t0.1 \t0.2 \t0.3 \t0.4 \n")
    [video] = expand_list("voxceleb2", tmp_path)
    assert video.video == "21Uxsk56VDQ"
    assert video.ranges == [(96 / 25, 221 / 25), (300 / 25, 350 / 25)]
    assert video.boxes[0] == FaceBox(0.567, 0.263, 0.567 + 0.137, 0.263 + 0.243)


def test_celebvhq_seconds_boxes_and_gender(tmp_path):
    info = {"meta_info": {"appearance_mapping": ["blurry", "male", "young"]},
            "clips": {"-2KGPYEFnsU_8": {"ytb_id": "-2KGPYEFnsU", "duration": {"start_sec": 102.6, "end_sec": 106.52},
                                        "bbox": {"top": 0.0991, "bottom": 0.7611, "left": 0.3241, "right": 0.6213},
                                        "attributes": {"appearance": [0, 1, 0], "action": [], "emotion": {}},
                                        "version": "v0.1"},
                      "-2KGPYEFnsU_9": {"ytb_id": "-2KGPYEFnsU", "duration": {"start_sec": 110.0, "end_sec": 115.0},
                                        "bbox": {"top": 0.1, "bottom": 0.7, "left": 0.3, "right": 0.6},
                                        "attributes": {"appearance": [0, 1, 0]}}}}
    _write(tmp_path / "celebvhq_info.json", json.dumps(info))
    [video] = expand_list("celebvhq", tmp_path)
    assert video.video == "-2KGPYEFnsU" and video.ranges == [(102.6, 106.52), (110.0, 115.0)]
    assert video.boxes[0] == FaceBox(0.3241, 0.0991, 0.6213, 0.7611) and video.attributes == {"gender": "male"}


def test_talkinghead1kh_frames_in_minute_chunks(tmp_path):
    _write(tmp_path / "small_video_ids.txt", "--Y9imYnfBw\n")
    _write(tmp_path / "small_video_tubes.txt", "--Y9imYnfBw_0000, 720, 1280, 0, 271, 504, 63, 792, 351\n"
           "--Y9imYnfBw_0002, 720, 1280, 30, 89, 500, 60, 800, 360 \n")
    [video] = expand_list("talkinghead1kh", tmp_path, fps=30)
    assert video.video == "--Y9imYnfBw"
    assert video.ranges == [(0.0, 272 / 30), (120 + 1.0, 120 + 3.0)]
    assert video.boxes[0] == FaceBox(504, 63, 792, 351, 1280, 720)


def test_avspeech_headerless_csv_with_face_centre(tmp_path):
    _write(tmp_path / "avspeech_test.csv", "AvWWVOgaMlk,90.000000,93.566667,0.586719,0.311111\n"
           "-0ZL7qDd8Xk,10.0,13.0,0.5,0.4\nAvWWVOgaMlk,100.0,104.0,0.5,0.5\n")
    first, second = expand_list("avspeech", tmp_path)
    assert (first.video, first.ranges) == ("AvWWVOgaMlk", [(90.0, 93.566667), (100.0, 104.0)])
    assert first.boxes[0] == FaceBox(0.586719, 0.311111, 0.586719, 0.311111)
    assert second.video == "-0ZL7qDd8Xk"


def test_talkvid_json_with_person_attributes(tmp_path):
    items = [{"id": "videovideoTr6MMsoWAog-scene1-scene1", "fps": 24.0, "start-time": 0.1, "end-time": 5.141666666666667,
              "info": {"Person ID": "597", "Ethnicity": "White", "Age Group": "60+", "Gender": "Male",
                       "Video Link": "https://www.youtube.com/watch?v=Tr6MMsoWAog", "Language": "English"}}]
    _write(tmp_path / "talkvid.json", json.dumps(items))
    [video] = expand_list("talkvid", tmp_path)
    assert youtube_id(video.video) == "Tr6MMsoWAog" and video.ranges == [(0.1, 5.141666666666667)]
    assert video.boxes == [None]
    assert video.attributes == {"gender": "male", "age": "60+", "ethnicity": "White", "language": "English"}


def test_a_listed_box_or_point_chooses_among_detections():
    import numpy as np

    from vividhead.models.face_detect import Face
    from vividhead.pipelines.framing import listed_faces

    frame = np.zeros((720, 1280, 3), np.uint8)
    left, right = Face(100, 100, 300, 300, 0.9), Face(900, 100, 1100, 300, 0.9)
    assert listed_faces([left, right], FaceBox(0.6, 0.0, 1.0, 0.6), frame) == [right]       # fractions of the frame
    assert listed_faces([left, right], FaceBox(1000, 200, 1000, 200, 1280, 720), frame) == [right]   # a point
    assert listed_faces([left, right], FaceBox(0, 400, 640, 720, None, 720), frame) == []   # the box holds no face


def test_a_malformed_line_names_the_file_and_line(tmp_path):
    _write(tmp_path / "x_video_tubes.txt", "abc_0000, 720, 1280, 0\n")
    with pytest.raises(ListError, match=r"x_video_tubes.txt:1: expected"):
        expand_list("talkinghead1kh", tmp_path)


def test_sources_json_prints_urls_ranges_and_boxes(tmp_path, capsys):
    _write(tmp_path / "lists/RD_video_url.txt", "Radio1 https://www.youtube.com/watch?v=aaaaaaaaaaa&t=3s\n")
    _write(tmp_path / "lists/RD_annotion_time.txt", "Radio1.mp4 00:20-01:35\n")
    _write(tmp_path / "lists/RD_crop_wh.txt", "Radio1_0.mp4 466 535 0 535\n")
    _write(tmp_path / "sources.yaml", "sources:\n  - list: {format: hdtf, path: lists}\n"
           "  - video: bbbbbbbbbbb\n    ranges: [{start: 1, end: 2, box: [0.1, 0.2, 0.3, 0.4]}]\n")
    assert main(["sources", str(tmp_path / "sources.yaml"), "--json"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["url"] == YT + "aaaaaaaaaaa" and first["ranges"] == [[20.0, 95.0]] and first["dataset"] == "hdtf"
    assert first["box"][0]["x0"] == 466 and first["kind"] == "video"
    assert second["url"] == YT + "bbbbbbbbbbb" and second["box"][0]["x1"] == 0.3


def test_real_hdtf_lists():
    folder = os.environ.get("VIVIDHEAD_HDTF_LISTS")
    if not folder:
        pytest.skip("set VIVIDHEAD_HDTF_LISTS to the HDTF_dataset folder of github.com/MRzzm/HDTF (not vendored: no licence)")
    listed = expand_list("hdtf", Path(folder))
    expected = set()
    for times in Path(folder).glob("*_annotion_time.txt"):
        urls = {line.split()[0] for line in times.with_name(times.name.replace("annotion_time", "video_url"))
                .read_text(encoding="utf-8-sig").splitlines() if line.strip()}
        for line in times.read_text(encoding="utf-8-sig").splitlines():
            name, *spans = line.split()
            if name.removesuffix(".mp4") in urls:
                expected |= {(times.name[:3], name, span) for span in spans}
    assert sum(len(v.ranges) for v in listed) == len(expected) > 0
