"""`vividhead eval` on existing videos: shards and video folders, the JSON and table, and missing weights.

Uses the real FID Inception-v3 and I3D formats (random weights, see test_eval_networks) on small
synthetic talking-face clips written in the build's shard format (train_fixtures).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from test_eval_networks import eval_weights
from train_fixtures import encode_mp4, write_shards
from vividhead.cli import main
from vividhead.evaluation.fid import FIDConfig
from vividhead.evaluation.fvd import FVDConfig
from vividhead.evaluation.report import format_table, write_report
from vividhead.evaluation.runner import EvalConfig, run_eval
from vividhead.evaluation.videos import list_videos, sample_clips, sample_frames
from vividhead.weights import Weights


@pytest.fixture(scope="module")
def sets(tmp_path_factory) -> dict[str, Path]:
    """The same two clips as a WebDataset shard and as an mp4 folder, plus a noisy copy of them."""
    root = tmp_path_factory.mktemp("eval sets")
    shard = write_shards(root / "shards", [2], n_frames=34, size=96)[0]
    plain, noisy = root / "plain vidéos", root / "noisy"
    plain.mkdir()
    noisy.mkdir()
    rng = np.random.default_rng(0)
    with tarfile.open(shard) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".mp4"):
                data = tar.extractfile(member).read()
                (plain / member.name).write_bytes(data)
    for item in list_videos(plain):
        clip = item.load()
        frames = np.clip(clip.frames + rng.normal(0, 40, clip.frames.shape), 0, 255).astype(np.uint8)
        (noisy / f"{item.key}.mp4").write_bytes(encode_mp4(frames, clip.audio))
    return {"shards": root / "shards", "plain": plain, "noisy": noisy, **eval_weights(tmp_path_factory)}


def test_sampling_helpers():
    assert sample_frames(10, 0).tolist() == list(range(10))
    assert sample_frames(10, 3).tolist() == [0, 4, 9]
    assert sample_clips(40, 16, 0) == [slice(0, 16), slice(16, 32)]
    assert sample_clips(40, 16, 1) == [slice(0, 16)]
    assert sample_clips(15, 16, 0) == []


def test_shards_and_files_list_the_same_videos(sets):
    shard_items, file_items = list_videos(sets["shards"]), list_videos(sets["plain"])
    assert [i.key for i in shard_items] == [i.key for i in file_items] and len(shard_items) == 2
    a, b = shard_items[0].load(), file_items[0].load()
    assert a.frames.shape == (34, 96, 96, 3) and a.fps == 25.0
    np.testing.assert_array_equal(a.frames, b.frames)
    assert abs(len(a.audio) - 34 * 640) < 1024       # the shard's 16 kHz wav


def test_fid_fvd_zero_for_the_same_videos_and_positive_for_noisy_ones(sets):
    weights = Weights(inception=sets["inception"], i3d=sets["i3d"])
    config = EvalConfig(metrics=("fid", "fvd"), fid=FIDConfig(frames_per_video=1),
                        fvd=FVDConfig("fvd-comparison"), device="cpu")
    same = run_eval(sets["plain"], sets["shards"], weights, config)
    assert same.row("FID").value == 0.0 and same.row("FVD").value == 0.0
    assert same.row("FID").detail == {"generated_frames": 2, "reference_frames": 2}
    assert same.row("FVD").detail == {"generated_clips": 4, "reference_clips": 4}
    assert (same.row("FID").protocol, same.row("FVD").protocol) == ("pytorch-fid", "fvd-comparison")
    noisy = run_eval(sets["noisy"], sets["shards"], weights, config)
    assert noisy.row("FVD").value > 0 and noisy.row("FID").value > 0
    # stylegan-v: one clip per video (a random one from each reference video), so not 0 on the same set
    stylegan = run_eval(sets["plain"], sets["shards"], weights, EvalConfig(metrics=("fvd",), device="cpu")).row("FVD")
    assert stylegan.protocol == "stylegan-v" and stylegan.detail == {"generated_clips": 2, "reference_clips": 2}


def test_missing_weights_and_inputs_are_unavailable_with_reasons(sets, tmp_path):
    report = run_eval(sets["plain"], None, Weights(i3d=tmp_path / "absent.pt"), EvalConfig(device="cpu"))
    reasons = {r.metric: r.reason for r in report.rows}
    assert all(r.status == "unavailable" and r.value is None for r in report.rows)
    assert "no --reference" in reasons["FID"] and "no --reference" in reasons["FVD"]
    assert "--syncnet" in reasons["Sync-C"] and "--checkpoint" in reasons["FPS"]
    report = run_eval(sets["plain"], sets["shards"], Weights(i3d=tmp_path / "absent.pt"),
                      EvalConfig(metrics=("fid", "fvd"), device="cpu"))
    assert "inception" in report.row("FID").reason and "not configured" in report.row("FID").reason
    assert "absent.pt does not exist" in report.row("FVD").reason
    json_path, table_path = write_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert [r["metric"] for r in data["rows"]] == ["FID", "FVD"] and data["rows"][0]["value"] is None
    assert "| FID ↓ | n/a | pytorch-fid | unavailable: no inception weights" in table_path.read_text()
    assert table_path.read_text() == format_table(report)


def test_short_videos_give_no_fvd_clips(sets):
    weights = Weights(i3d=sets["i3d"])
    config = EvalConfig(metrics=("fvd",), fvd=FVDConfig(clip_frames=40), device="cpu")
    row = run_eval(sets["plain"], sets["shards"], weights, config).row("FVD")
    assert row.status == "unavailable" and "at least 2 clips" in row.reason


def test_cli_writes_json_and_table(sets, tmp_path, capsys):
    empty = tmp_path / "weights.yaml"
    empty.write_text("{}\n")
    out = tmp_path / "out"
    code = main(["eval", "--generated", str(sets["noisy"]), "--reference", str(sets["shards"]), "--out", str(out),
                 "--weights", str(empty), "--i3d", str(sets["i3d"]), "--metrics", "fvd,sync"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| FVD ↓ |" in printed and "| Sync-C ↑ | n/a | syncnet_python | unavailable: no syncnet weights" in printed
    rows = {r["metric"]: r for r in json.loads((out / "eval.json").read_text())["rows"]}
    assert rows["FVD"]["status"] == "ok" and rows["FVD"]["value"] > 0
    assert main(["eval", "--generated", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_sync_rows_average_scored_videos_and_name_skips():
    from vividhead.evaluation.report import VideoScore
    from vividhead.evaluation.runner import _sync_rows

    scores = [VideoScore("a", "a.mp4", "reference", 50, 25.0, 6.0, 7.0, 1),
              VideoScore("b", "b.mp4", "reference", 50, 25.0, 4.0, 9.0, -3),
              VideoScore("c", "c.mp4", "reference", 50, 25.0, note="sync: no face detected")]
    rows = {r.metric: r for r in _sync_rows(scores, "exact", suffix=" (reference)")}
    assert rows["Sync-C (reference)"].value == 5.0 and rows["Sync-C (reference)"].better == "higher"
    assert rows["Sync-D (reference)"].value == 8.0 and rows["Sync-D (reference)"].detail["skipped"] == 1
    offset = rows["AV offset (reference)"]
    assert offset.value == 2.0 and offset.better == "lower" and offset.detail["signed_mean"] == -1.0
    assert all(r.protocol == "exact" for r in rows.values())
    none = _sync_rows(scores[2:], "exact")
    assert none[0].status == "unavailable" and "no face detected" in none[0].reason


def test_frames_resampled_to_25_fps_for_syncnet():
    from vividhead.evaluation.sync import to_25fps

    frames = np.arange(60)[:, None, None, None] * np.ones((1, 2, 2, 3), np.uint8)
    out = to_25fps(frames, 30.0)                     # 2 s at 30 fps -> 50 frames at 25 fps
    assert len(out) == 50 and out[0, 0, 0, 0] == 0 and out[25, 0, 0, 0] == 30
    assert to_25fps(frames, 25.0) is frames
    vfr = np.array([0.0, 0.04, 0.2, 0.24])             # a frame held for 0.16 s (variable frame rate)
    held = to_25fps(frames[:4], 0.0, vfr)
    assert held[:, 0, 0, 0].tolist() == [0, 1, 1, 1, 1, 2, 3]
    assert to_25fps(frames[:4], 25.0, np.arange(4) / 25) is not None
