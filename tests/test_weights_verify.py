"""Verification at load: lock records catch truncated or changed files, loaders check the shape of what
they load, and a wrong file under a weights name stops `vividhead build` with one line before any worker."""

from __future__ import annotations

import json

import pytest

from conftest import run_vividhead
from tiny_models import write_tiny_dwpose, write_tiny_genderage, write_tiny_scrfd, write_tiny_whisper
from vividhead.weights import MODELS
from vividhead.weights_verify import (LOCK_NAME, WeightsError, lock_record, verify_file, verify_weights,
                                      write_lock_record)


def test_lock_record_catches_a_truncated_file(tmp_path):
    path = write_tiny_scrfd(tmp_path / "scrfd_10g_bnkps.onnx")
    write_lock_record(path, lock_record(path, "scrfd", "https://example.org/scrfd.onnx", ""))
    assert verify_file("scrfd", path).state == "lock"
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(WeightsError, match=rf"{size // 2} bytes, expected {size} \(recorded in .*{LOCK_NAME}\)"):
        verify_file("scrfd", path)


def test_lock_record_of_a_release_covers_its_model_folders(tmp_path):
    release = tmp_path / "SoulX-FlashHead-1_3B"
    (release / "Model_Lite").mkdir(parents=True)
    (release / "Model_Lite" / "config.json").write_text("{}")
    (release / "Model_Lite" / "diffusion_pytorch_model.safetensors").write_bytes(b"x" * 64)
    (release / "VAE_LTX").mkdir()
    (release / "VAE_LTX" / "autoencoder.pth").write_bytes(b"y" * 64)
    write_lock_record(release, lock_record(release, "flashhead", "hf://Soul-AILab/SoulX-FlashHead-1_3B", "abc"))
    assert verify_weights("flashhead", release).state == "lock"
    weights = release / "Model_Lite" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(b"z" * 64)                      # same size, other bytes
    with pytest.raises(WeightsError, match="SHA-256 .* expected"):
        verify_file("flashhead", release / "Model_Lite")
    assert verify_file("flashhead", release / "VAE_LTX").state == "lock"   # only the folder asked about


def test_published_checksum_without_a_lock_record_flags_another_file(tmp_path):
    """Without a lock record the published SHA-256 is compared, not enforced: other exports are allowed at
    load; `weights fetch` refuses to record a file that is not the published one."""
    path = write_tiny_dwpose(tmp_path / "weights" / "dw-ll_ucoco_384.onnx")
    integrity = verify_file("dwpose_pose", path)
    assert integrity.state == "other" and f"not the published {MODELS['dwpose_pose'].source.sha256}" in integrity.detail
    (tmp_path / "weights.yaml").write_text("dwpose_pose: weights/dw-ll_ucoco_384.onnx\n")
    (tmp_path / "build.yaml").write_text("weights_manifest: weights.yaml\n")
    fetch = run_vividhead("weights", "fetch", "dwpose_pose", "--config", tmp_path / "build.yaml", check=False)
    assert fetch.returncode == 1 and "not recording it" in fetch.stderr and fetch.stderr.count("\n") == 1
    assert not (path.parent / LOCK_NAME).exists()


def test_shape_checks_name_expected_and_found(tmp_path):
    whisper = write_tiny_whisper(tmp_path / "whisper-tiny")
    assert verify_weights("language_id", whisper).state == "unverified"
    with pytest.raises(WeightsError, match="expected model_type 'wav2vec2' \\(wav2vec2\\), found 'whisper'"):
        verify_weights("wav2vec2", whisper)
    scrfd = write_tiny_scrfd(tmp_path / "scrfd.onnx")
    with pytest.raises(WeightsError, match=r"expected state-dict keys .*\(syncnet\), found an unreadable file|"
                                           r"expected a torch state dict \(syncnet\)"):
        verify_weights("syncnet", scrfd)
    with pytest.raises(WeightsError, match=r"expected a TorchScript archive \(i3d\)"):
        verify_weights("i3d", scrfd)


def test_wrong_onnx_under_the_scrfd_name_stops_the_build_with_one_line(tmp_path):
    """An ONNX file with the wrong input name (insightface genderage) where SCRFD is expected: one line at
    build start, no worker traceback, nothing built."""
    wrong = write_tiny_genderage(tmp_path / "weights" / "scrfd_10g_bnkps.onnx")
    config = tmp_path / "build.yaml"
    config.write_text(f"weights:\n  scrfd: {wrong}\n")
    out = tmp_path / "out"

    build = run_vividhead("build", "--demo", "--out", out, "--config", config, "--no-progress", check=False)
    assert build.returncode == 2
    assert build.stderr == f"error: {wrong}: expected ONNX input ['input.1'] (scrfd), found ['data']\n"
    assert not out.exists()                       # stopped before the demo corpus, Ray or any worker

    check = run_vividhead("build", "--check-weights", "--config", config, check=False)
    assert check.returncode == 1
    assert f"error: {wrong}: expected ONNX input ['input.1'] (scrfd), found ['data']" in check.stdout.splitlines()

    from vividhead.models.face_detect import ScrfdFaceDetector
    with pytest.raises(WeightsError, match=r"expected ONNX input \['input.1'\]"):
        ScrfdFaceDetector(wrong)
    ScrfdFaceDetector(write_tiny_scrfd(tmp_path / "right" / "scrfd_10g_bnkps.onnx"))   # the real signature loads


def test_weights_list_without_weights(tmp_path):
    (tmp_path / "weights.yaml").write_text("scrfd: nowhere/scrfd_10g_bnkps.onnx\n")
    (tmp_path / "build.yaml").write_text("weights_manifest: weights.yaml\n")
    result = run_vividhead("weights", "--config", tmp_path / "build.yaml", "--json")
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert list(rows) == list(MODELS)
    assert rows["scrfd"]["status"] == "missing" and rows["i3d"]["status"] == "not configured"
    assert all(r["source"] and r["licence"] and r["without"] for r in rows.values())
    assert rows["dwpose_pose"]["sha256"] == MODELS["dwpose_pose"].source.sha256
    table = run_vividhead("weights", "--config", tmp_path / "build.yaml").stdout
    assert next(line for line in table.splitlines() if line.startswith("scrfd ")).split()[:2] == ["scrfd", "missing"]
