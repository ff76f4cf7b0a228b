"""Kill-safe resume: a build SIGKILLed at several points and resumed equals an uninterrupted build.

The first tests drive `resume.prepare` directly on output directories left as a kill leaves them
(no Ray, no decode): a source-level row committed as a segment and not yet packed (the wedge of
issue 23), and segments, parts and a ledger that cannot be read, which resume drops, records and
remakes instead of stopping every later build.

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
from vividhead.pipelines import stages
from vividhead.pipelines.config import BuildConfig, resolve_weights
from vividhead.pipelines.output import OutputDir
from vividhead.pipelines.records import Source
from vividhead.pipelines.resume import ResumeState, prepare
from vividhead.pipelines.rows import sample_json, write_part
from vividhead.pipelines.segments import pack, write_source_segment
from vividhead.pipelines.units import SourceRejection
from vividhead.shards import write_shard


def _hashes(config) -> dict[str, str]:
    return {"config_hash": config.config_hash(), "content_hash": config.content_hash(),
            "stages_hash": config.stages_hash(resolve_weights(config)), "pipeline_version": "test"}


def _rejection(name: str) -> SourceRejection:
    source = Source(f"default:{name}", f"/videos/{name}", md5=name.encode().hex().ljust(32, "0")[:32])
    return SourceRejection(f"{source.md5[:16]}_source", source, "probe", "no_audio", "no audio stream")


def test_pending_source_rejection_segment_resumes(tmp_path: Path) -> None:
    """The wedge: a source rejected before it had clips waits, as a segment without `duration`, to be packed."""
    config = BuildConfig()
    out = OutputDir(tmp_path / "out")
    rejection = _rejection("silent.mp4")
    write_source_segment(out, rejection, _hashes(config))
    for _ in range(2):                                   # the re-run, and every run after it
        state = prepare(out, config, _hashes(config), stages.metric_types())
        assert [(s.unit, s.status, s.hours) for s in state.pending] == [(rejection.unit_id, "rejected", 0.0)]
        assert rejection.unit_id in state.rows, "the rejection is committed: it is not written again"
        assert state.dropped == {}


def _kept_segment(out: OutputDir, unit: str, key: str, hashes: dict[str, str]) -> Path:
    """A kept clip committed as a segment, as `segments.write_segment` leaves it (one piece, its unit's end)."""
    row = {"key": key, "unit": unit, "status": "kept", "source_id": f"default:{unit}", "uri": f"/videos/{unit}.mp4",
           "start": 0.0, "end": 5.0, "duration": 5.0, "segment.piece_start": 0.0, "segment.end_reason": "end",
           "timings": "{}", **hashes}
    path = out.segment(unit, key)
    write_shard(path, [(key, {"mp4": b"\0" * 4000, "wav": b"\1" * 3000, "json": sample_json(row)})])
    return path


def _prepare(out: OutputDir, config) -> ResumeState:
    return prepare(out, config, _hashes(config), stages.metric_types())


def test_unreadable_segments_are_dropped_recorded_and_remade(tmp_path: Path, capsys) -> None:
    config = BuildConfig()
    out = OutputDir(tmp_path / "out")
    good = _kept_segment(out, "unit_a", "unit_a_000", _hashes(config))
    truncated = _kept_segment(out, "unit_b", "unit_b_000", _hashes(config))
    truncated.write_bytes(truncated.read_bytes()[:3000])                       # cut inside the mp4
    garbage = _kept_segment(out, "unit_c", "unit_c_000", _hashes(config))
    garbage.write_bytes(b"not a tar at all" * 100)
    no_status = out.segment("unit_d", "unit_d_000")
    write_shard(no_status, [("unit_d_000", {"json": b'{"key": "unit_d_000", "unit": "unit_d", "config_hash": "x"}'})])
    not_json = out.segment("unit_e", "unit_e_000")
    write_shard(not_json, [("unit_e_000", {"json": b"\xff\xfe{"})])

    state = _prepare(out, config)
    assert [s.path for s in state.pending] == [str(good)]
    dropped = {Path(name).parent.name: why for name, why in state.dropped.items()}
    assert set(dropped) == {"unit_b", "unit_c", "unit_d", "unit_e"}
    assert "unreadable tar" in dropped["unit_b"] and "unreadable tar" in dropped["unit_c"]
    assert "status" in dropped["unit_d"] and "JSON" in dropped["unit_e"]
    assert set(state.redo) == {"unit_b", "unit_c", "unit_d", "unit_e"}
    assert set(state.rows) == {"unit_a"}, "the dropped clips are made again"
    assert sorted(p.name for p in out.segments.rglob("*.tar")) == ["unit_a_000.tar"]
    err = capsys.readouterr().err
    assert err.count("resume: dropped .segments/") == 4 and "made again" in err
    assert _prepare(out, config).dropped == {}, "the next run finds nothing more to drop"


def test_unreadable_ledger_part_row_and_intent_never_stop_a_build(tmp_path: Path, capsys) -> None:
    config = BuildConfig()
    hashes = _hashes(config)
    out = OutputDir(tmp_path / "out")
    types = stages.metric_types()
    # shard-000000: two kept clips; shard-000001: one source-level row; then damage them one by one
    pack(out.root, "shard-000000", [str(_kept_segment(out, u, f"{u}_000", hashes)) for u in ("u1", "u2")],
         types, hashes["stages_hash"])
    rejection = _rejection("silent.mp4")
    pack(out.root, "shard-000001", [write_source_segment(out, rejection, hashes).path], types,
         hashes["stages_hash"])
    assert set(_prepare(out, config).rows) == {"u1", "u2", rejection.unit_id}

    out.ledger.write_bytes(b"PAR1 this is no parquet")                     # a damaged cache: rebuilt
    state = _prepare(out, config)
    assert set(state.rows) == {"u1", "u2", rejection.unit_id}
    assert "unreadable ledger" in state.dropped[".cache/ledger.parquet"]

    rows = pq.read_table(out.part("shard-000000")).to_pylist()
    rows[1]["status"] = None                                                 # a row resume cannot use
    write_part(out.part("shard-000000"), rows, types, hashes["stages_hash"])
    state = _prepare(out, config)
    assert set(state.rows) == {"u1", rejection.unit_id} and "status" in state.redo["u2"]
    assert _shard_keys_of(out.shard("shard-000000")) == ["u1_000"], "its sample left the shard with it"

    out.part("shard-000001").write_bytes(b"garbage")                         # a part that cannot be read
    intent = out.intent("shard-000002")
    intent.write_text("[not json")                                           # an intent that cannot be read
    state = _prepare(out, config)
    assert set(state.rows) == {"u1"}, "the source-level row is committed again by the next run"
    assert "unreadable manifest part" in state.dropped["manifest/shard-000001.parquet"]
    assert not intent.exists()
    assert "resume: dropped manifest/shard-000001.parquet" in capsys.readouterr().err
    assert _prepare(out, config).dropped == {}


def _shard_keys_of(shard: Path) -> list[str]:
    with tarfile.open(shard) as tar:
        return sorted({m.name.split(".", 1)[0] for m in tar.getmembers()})


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
