"""benchmarks/gpu_check.py --smoke: the prepared GPU check runs on a CPU at tiny shapes and its JSON has every section.

One smoke run (about a minute on a shared 2-core machine) is shared by the tests of this file.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "parity", "stream", "build_stages", "training", "dmd")


@pytest.fixture(scope="module")
def smoke_report(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu-check") / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "gpu_check (smoke)" in proc.stdout            # the short text table
    return json.loads(out.read_text())


def test_every_section_is_present_and_ran(smoke_report):
    for section in SECTIONS:
        assert section in smoke_report, section
    for section in ("environment", "parity", "build_stages", "training", "dmd"):
        assert smoke_report[section]["status"] == "ok", (section, smoke_report[section])
    assert smoke_report["smoke"] is True and smoke_report["total_s"] > 0


def test_stream_section_has_the_figures_the_issue_asks_for(smoke_report):
    stream = smoke_report["stream"]["tiny"]
    assert stream["status"] == "ok" and stream["flops"]["dit_step"] > 0
    shipped = stream["runs"]["shipped"]
    assert shipped["status"] == "ok" and shipped["dit_tflops"] > 0 and shipped["first_frame"]["total_s"] > 0
    for n in ("1", "2"):
        figures = shipped["sessions"][n]
        assert figures["status"] == "ok" and figures["fps"] > 0
        assert figures["chunk_latency_p95_ms"] >= figures["chunk_latency_p50_ms"] > 0
        assert set(figures["stage_ms"]) == {"audio_encode", "dit", "vae_decode", "motion_encode", "output_encode"}
        assert 0 <= figures["outside_dit_vae_share"] <= 1
    for speedup in ("compile", "cuda_graphs"):                # GPU-only: recorded as skipped, with the reason
        assert stream["runs"][speedup]["status"] == "skipped" and stream["runs"][speedup]["reason"]


def test_build_training_dmd_and_parity_figures(smoke_report):
    build = smoke_report["build_stages"]
    assert build["syncnet"]["clips_per_s"] > 0 and build["syncnet"]["batch_size"] >= 1
    assert build["wav2vec2_features"]["clips_per_s"] > 0
    assert build["face_detector"]["status"] in ("ok", "skipped")
    assert smoke_report["training"]["step"]["tokens_per_s"] > 0
    assert smoke_report["dmd"]["iterations"]["fake_step_s_median"] > 0
    parity = smoke_report["parity"]["presets"]["tiny"]
    assert parity["fp32_device_vs_cpu_max_abs"] == 0.0          # no GPU: the same CPU computation twice
    assert 0 < parity["bf16_vs_fp32_rel"] < 0.1


def test_a_spent_budget_skips_what_is_left_and_says_so(tmp_path):
    """Measurements that would start after the part's budget are skipped, with the reason in the report."""
    out = tmp_path / "check.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--smoke", "--only", "environment",
                           "--budget-scale", "0.0001", "--out", str(out)], capture_output=True, text=True, timeout=120)
    report = json.loads(out.read_text())
    env = report["environment"]
    assert env["matmul_bf16"]["status"] == "skipped" and "time budget" in env["matmul_bf16"]["reason"]
    assert report["parity"]["status"] == "skipped"              # not run (--only)
    assert proc.returncode == 0


def test_compile_mode_is_checked():
    from vividhead.inference.engine import EngineOptions

    assert EngineOptions(compile=True, compile_mode="reduce-overhead").compile_mode == "reduce-overhead"
    with pytest.raises(ValueError, match="compile_mode"):
        EngineOptions(compile_mode="fastest")
