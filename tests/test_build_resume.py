"""Kill-safe resume: a build SIGKILLed at several points and resumed equals an uninterrupted build.

The uninterrupted build is the session's `demo_build`. A second build of the same demo sources,
with shards of at most two samples so that packs happen during the build, is killed (the whole
process group: driver, Ray and its workers) in the middle of its first unit, right after its first
clips were committed as segments, and right after its first shard was packed; at every kill,
readers see only complete shards and manifest parts. The last run completes it. Keys, decisions
and the shards' samples must then match; no segment, orphan or temporary file is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from conftest import run_vividhead


def _start(sources: Path, out: Path, config: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--out",
                             str(out), "--config", str(config), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)


def _kill_when(process: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert process.poll() is None, "the build finished before the kill point"
            assert time.monotonic() < deadline, "the kill point was never reached"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _visible_files_are_complete(out: Path) -> None:
    """What a reader lists (no dot-files) is whole: every tar reads to its end, every part opens."""
    for shard in (out / "shards").glob("*.tar"):
        with tarfile.open(shard) as tar:
            assert tar.getmembers()
    for part in (out / "manifest").glob("*.parquet"):
        assert pq.read_table(part).num_rows >= 1


def _decisions(out: Path) -> list[tuple]:
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    return sorted((r["uri"].rsplit("/", 1)[-1], r["key"], r["status"], r["reject_stage"], r["reject_reason"])
                  for r in rows)


def _shard_keys(out: Path) -> list[str]:
    keys = []
    for shard in sorted((out / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})
    return sorted(keys)


def test_sigkill_at_several_points_then_resume_equals_uninterrupted(demo_build: Path, tmp_path: Path) -> None:
    sources = demo_build / "demo-sources" / "sources.yaml"
    out = tmp_path / "killed"
    parts = out / "manifest"
    config = tmp_path / "small-shards.yaml"
    config.write_text("shards: {max_samples: 2}\n")    # how output is cut into shards: not a decision

    def staging_started() -> bool:   # inside the first unit's decode pass, nothing committed yet
        staging = out / ".staging"
        return staging.exists() and any(staging.rglob("*.mp4"))

    def clips_committed() -> bool:   # some clips committed as segments
        return len(list((out / ".segments").glob("*/*.tar"))) >= 2

    def shard_packed() -> bool:
        return parts.exists() and any(parts.glob("*.parquet"))

    for ready in (staging_started, clips_committed, shard_packed):
        _kill_when(_start(sources, out, config), ready)
        _visible_files_are_complete(out)

    result = run_vividhead("build", "--sources", sources, "--out", out, "--config", config, "--no-progress")
    assert "already done" in result.stdout
    assert _decisions(out) == _decisions(demo_build)
    assert _shard_keys(out) == _shard_keys(demo_build)
    committed = {p.stem for p in parts.glob("*.parquet")}
    assert {s.stem for s in (out / "shards").glob("*.tar")} <= committed, "no orphan shard is left"
    assert not list(out.rglob(".*.tmp")), "no temporary file is left"
    staging = out / ".staging"
    assert not staging.exists() or not any(staging.iterdir()), "no staged clip is left"
    assert not list((out / ".segments").rglob("*.tar")), "every committed clip was packed"
    keys = [k for k in pq.read_table(out / "manifest.parquet").column("key").to_pylist() if k]
    assert len(keys) == len(set(keys)), "no duplicate key"


def test_changed_threshold_is_re_decided_from_stored_metrics(demo_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(demo_build, out)
    config = tmp_path / "strict.yaml"
    config.write_text("visibility:\n  max_missing_ratio: 0.0\nflow:\n  max_residual: 0.001\n")
    result = run_vividhead("build", "--sources", demo_build / "demo-sources" / "sources.yaml", "--config", config,
                           "--out", out, "--no-progress")
    assert "config changed" in result.stdout and "re-decided from stored metrics" in result.stdout
    assert json.loads((out / "build.json").read_text())["this_run"]["units_redone"] == {}, "nothing was decoded again"
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert all(r["status"] != "kept" for r in rows), "a threshold this strict rejects every clip"
    assert {r["reject_reason"] for r in rows if r["reject_stage"] == "flow"} == {"abrupt_transition"}
    assert not list((out / "shards").glob("*.tar"))


def test_changed_filter_threshold_is_re_decided_and_a_loosened_one_recomputes(demo_build: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(demo_build, out)
    sources = demo_build / "demo-sources" / "sources.yaml"
    strict = tmp_path / "strict.yaml"
    strict.write_text("speech:\n  min_speech_ratio: 0.99\n")
    result = run_vividhead("build", "--sources", sources, "--config", strict, "--out", out, "--no-progress")
    assert "re-decided from stored metrics" in result.stdout
    assert json.loads((out / "build.json").read_text())["this_run"]["units_redone"] == {}, "nothing was decoded again"
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert {r["reject_reason"] for r in rows if r["reject_stage"] == "speech"} == {"no_speech"}
    assert all(r["status"] != "kept" for r in rows if (r["speech.speech_ratio"] or 1.0) < 0.99)

    result = run_vividhead("build", "--sources", sources, "--out", out, "--no-progress")   # back to the default
    redone = json.loads((out / "build.json").read_text())["this_run"]["units_redone"]
    assert redone and set(redone.values()) == {"a clip rejected before now passes its thresholds"}
    keys = lambda d: sorted(r["key"] for r in pq.read_table(d / "manifest.parquet").to_pylist() if r["status"] == "kept")  # noqa: E731
    assert keys(out) == keys(demo_build)
