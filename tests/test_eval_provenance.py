"""`eval.json` names exactly what produced each number, and warns where a number rests on too few samples.

`vividhead eval` runs in-process on two 34-frame 96x96 synthetic talking-face clips per side (the
smallest that give FVD two clips per video), with the real-format test networks (random FID
Inception-v3 and I3D, test_eval_networks; a random SyncNet and a tiny SCRFD ONNX with the real
signature, tiny_models). Cases: every metric with the configured SCRFD file missing (mediapipe used),
a Sync-only selection with SCRFD present and a weights lock, tiny clip counts, and every metric n/a.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from test_eval_networks import eval_weights
from tiny_models import write_tiny_scrfd, write_tiny_syncnet
from train_fixtures import encode_mp4, synth_clip
from vividhead.cli import main
from vividhead.evaluation import provenance
from vividhead.evaluation.provenance import SAMPLE_MINIMUMS, SampleMinimum, SetCounts
from vividhead.evaluation.report import figure
from vividhead.evaluation.runner import _frechet_row
from vividhead.weights_verify import lock_record, write_lock_record

FRAMES = 34


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Generated and reference folders of two clips each, the test networks, and an empty manifest."""
    root = tmp_path_factory.mktemp("provenance")
    for side, seeds in (("generated", (0, 1)), ("reference", (2, 3))):
        (root / side).mkdir()
        for seed in seeds:
            frames, audio = synth_clip(FRAMES, seed, size=96)
            (root / side / f"clip{seed}.mp4").write_bytes(encode_mp4(frames, audio))
    manifest = root / "weights.yaml"
    manifest.write_text("{}\n")                         # only the weights passed on the command line
    nets = root / "nets"
    return {"root": root, "generated": root / "generated", "reference": root / "reference", "manifest": manifest,
            "syncnet": write_tiny_syncnet(nets / "syncnet_v2.model"),
            "scrfd": write_tiny_scrfd(nets / "scrfd_10g_bnkps.onnx"), **eval_weights(tmp_path_factory)}


def _eval(inputs: dict[str, Path], out: Path, *args: str | Path) -> tuple[int, dict]:
    code = main(["eval", "--generated", str(inputs["generated"]), "--reference", str(inputs["reference"]),
                 "--out", str(out), "--weights", str(inputs["manifest"]), "--device", "cpu", *map(str, args)])
    report = json.loads((out / "eval.json").read_text()) if (out / "eval.json").is_file() else {}
    return code, report


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_metric_without_the_scrfd_file_names_mediapipe_and_warns_on_tiny_counts(inputs, tmp_path, capsys):
    out = tmp_path / "out"
    missing_scrfd = tmp_path / "absent" / "scrfd_10g_bnkps.onnx"
    code, report = _eval(inputs, out, "--metrics", "fid,fvd,sync", "--inception", inputs["inception"],
                         "--i3d", inputs["i3d"], "--syncnet", inputs["syncnet"], "--scrfd", missing_scrfd,
                         "--fid-frames", "1", "--fvd-protocol", "fvd-comparison", "--sync-protocol", "exact")
    assert code == 0
    rows = {r["metric"]: r for r in report["rows"]}
    assert list(rows) == ["FID", "FVD", "Sync-C", "Sync-D", "AV offset"]

    fid, fvd = rows["FID"]["provenance"], rows["FVD"]["provenance"]
    assert [(m["name"], m["path"], m["sha256"]) for m in fid["models"]] == [
        ("inception", str(inputs["inception"]), _sha256(inputs["inception"]))]
    assert [(m["name"], m["sha256"]) for m in fvd["models"]] == [("i3d", _sha256(inputs["i3d"]))]
    assert fid["models"][0]["check"] == "unverified" and fid["models"][0]["runtime"].startswith("torch ")
    assert fid["generated"] == {"videos": 2, "frames": 2, "clips": None, "skipped": 0, "source_fps": [25.0]}
    assert fid["reference"]["frames"] == 2 and fid["face_detector"] is None
    assert fvd["generated"] == {"videos": 2, "frames": 4 * 16, "clips": 4, "skipped": 0, "source_fps": [25.0]}
    assert fvd["preprocessing"]["covariance"] == "divided by N - 1" and "centre crop" in fvd["preprocessing"]["resize"]
    assert fid["preprocessing"]["frames"] == "1 evenly spaced frames per video"
    # tiny counts: the figure stands, the row carries the warning naming the minimum and its source
    for metric, unit in (("FID", "frames"), ("FVD", "clips")):
        assert rows[metric]["status"] == "ok" and rows[metric]["value"] is not None
        [warning] = rows[metric]["warnings"]
        assert warning["code"] == "few_samples" and f"below 2048 " in warning["message"]
        assert unit in warning["message"] and SAMPLE_MINIMUMS[metric].source in warning["message"]

    for metric in ("Sync-C", "Sync-D", "AV offset"):
        sync = rows[metric]["provenance"]
        assert sync["face_detector"] == "mediapipe" and sync["protocol"] == "exact"
        syncnet, detector = sync["models"]
        assert (syncnet["name"], syncnet["sha256"]) == ("syncnet", _sha256(inputs["syncnet"]))
        assert detector["name"] == "mediapipe" and detector["path"] is None and detector["check"] == "embedded"
        assert f"{missing_scrfd} do not exist" in detector["note"] and detector["runtime"].startswith("mediapipe ")
        assert sync["reference"] is None and "presentation time" in sync["preprocessing"]["frame_rate"]
    # the SCRFD file was configured but not used: only the note on the fallback names it
    assert json.dumps(report).count(str(missing_scrfd)) == 3
    assert report["settings"]["weights"] == {"inception": str(inputs["inception"]), "i3d": str(inputs["i3d"]),
                                             "syncnet": str(inputs["syncnet"])}
    assert {"python", "torch", "numpy", "scipy", "av", "libavcodec", "opencv"} <= set(report["versions"])

    table = capsys.readouterr().out
    assert table.startswith((out / "eval.md").read_text())
    assert "| FID ↓ |" in table and "⚠ few_samples, generated_frames=2, reference_frames=2 |" in table
    assert "detector=mediapipe" in table and "- FVD: 4 generated and 4 reference clips, below 2048" in table
    if rows["AV offset"]["warnings"]:                  # one line for the three Sync rows' shared warning
        assert "- Sync-C, Sync-D, AV offset: " in table


def test_sync_only_with_scrfd_lists_only_syncnet_and_scrfd_with_lock_hashes(inputs, tmp_path):
    nets = tmp_path / "locked"
    nets.mkdir()
    syncnet = nets / "syncnet_v2.model"
    syncnet.write_bytes(inputs["syncnet"].read_bytes())
    write_lock_record(syncnet, lock_record(syncnet, "syncnet", "test", ""))
    out = tmp_path / "out"
    # --inception and --i3d are given but Sync alone is selected: neither may be listed
    code, report = _eval(inputs, out, "--metrics", "sync", "--syncnet", syncnet, "--scrfd", inputs["scrfd"],
                         "--inception", inputs["inception"], "--i3d", inputs["i3d"], "--sync-protocol", "exact")
    assert code == 0
    assert [r["metric"] for r in report["rows"]] == ["Sync-C", "Sync-D", "AV offset"]
    assert report["settings"]["weights"] == {"syncnet": str(syncnet), "scrfd": str(inputs["scrfd"])}
    assert not {"fid", "fvd"} & set(report["settings"]) and report["settings"]["sync_protocol"] == "exact"
    text = json.dumps(report)
    assert "inception" not in text.lower() and "i3d" not in text.lower()
    rows = {r["metric"]: r for r in report["rows"]}
    sync = rows["Sync-C"]["provenance"]
    assert sync["face_detector"] == "scrfd"
    assert [(m["name"], m["path"], m["sha256"], m["check"]) for m in sync["models"]] == [
        ("syncnet", str(syncnet), _sha256(syncnet), "lock"),
        ("scrfd", str(inputs["scrfd"]), _sha256(inputs["scrfd"]), "unverified")]
    assert sync["models"][1]["runtime"].startswith("onnxruntime ")
    # the tiny SCRFD finds its fixed face in every frame: both videos scored on all their frames
    assert sync["generated"] == {"videos": 2, "frames": 2 * FRAMES, "clips": None, "skipped": 0, "source_fps": [25.0]}
    assert rows["Sync-C"]["status"] == "ok" and rows["Sync-C"]["detail"]["videos"] == 2
    offsets = [v["offset"] for v in report["videos"] if v["set"] == "generated"]
    at_limit = sum(abs(o) >= 15 for o in offsets)
    offset = rows["AV offset"]
    assert offset["detail"]["videos_at_search_limit"] == at_limit
    assert offset["detail"]["share_at_search_limit"] == at_limit / 2
    expected = ["offset_at_search_limit"] if at_limit else []
    assert [w["code"] for w in offset["warnings"]] == expected
    assert all(not w["code"] == "few_samples" for r in report["rows"] for w in r["warnings"])   # Sync has no minimum
    assert "detector=scrfd" in (out / "eval.md").read_text()


def test_every_metric_unavailable_exits_2_with_one_line(inputs, tmp_path, capsys):
    code = main(["eval", "--generated", str(inputs["generated"]), "--out", str(tmp_path / "out"),
                 "--weights", str(inputs["manifest"]), "--metrics", "fid,sync"])
    assert code == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith("vividhead eval: no metric could be computed (FID: no --reference")
    assert "Sync-C, Sync-D, AV offset: no syncnet weights" in captured.err
    assert f"wrote {tmp_path / 'out' / 'eval.json'}" in captured.err


def test_sample_minimums_are_read_from_one_place(monkeypatch):
    rng = np.random.default_rng(0)
    features = [rng.standard_normal((3, 8))], [rng.standard_normal((3, 8))]
    assert [w.code for w in _frechet_row("FID", *features, "frames", "pytorch-fid").warnings] == ["few_samples"]
    monkeypatch.setitem(SAMPLE_MINIMUMS, "FID", SampleMinimum(3, "frames", "a test's minimum"))
    assert _frechet_row("FID", *features, "frames", "pytorch-fid").warnings == []
    assert provenance.few_samples("FID", 2, 3)[0].message.startswith("2 generated and 3 reference frames, below 3")
    assert provenance.few_samples("Sync-C", 1, 1) == []


def test_fvd_warns_when_the_two_sides_have_different_frame_rates():
    same, other = SetCounts(2, 32, 2, source_fps=(25.0,)), SetCounts(2, 32, 2, source_fps=(30.0,))
    assert provenance.frame_rates_differ(same, same) == []
    [warning] = provenance.frame_rates_differ(same, other)
    assert warning.code == "frame_rates_differ" and "25 fps, reference at 30 fps" in warning.message


@pytest.mark.parametrize("value, text", [(8.31, "8.310"), (103.14, "103.1"), (0.0512345, "0.05123"),
                                         (9.99996, "10.00"), (12345.6, "12346"), (0.0, "0"), (-1.5, "-1.500")])
def test_figures_print_to_four_significant_digits(value, text):
    assert figure(value) == text
