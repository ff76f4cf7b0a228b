"""Kill-anywhere: a build killed at any moment, or hit by a fault, and re-run equals an uninterrupted build.

The harness is `benchmarks/kill_anywhere.py` (run it there with any number of kills); here it runs
with a few kill points over its smallest corpus: a talking head (kept), a faceless video (a clip
rejection), a duplicate, a source without audio and one too short (source rejections), a missing
file and a unit whose decode pass always raises (failed), with one-sample shards so that packs
happen during the build and the model stages off. One clean build serves every test of the module.
Kills go to the build's whole process group (driver, local Ray, workers); named moments are reached
through the fault hook `benchmarks/faults/sitecustomize.py`, which stops the build there. SIGTERM
(inside `ray.init`) and SIGINT to the process group (mid-build) stop a run with one line and no process left.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import tarfile
import time
from pathlib import Path

import pytest

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "kill_anywhere.py"


def _harness_module():
    spec = importlib.util.spec_from_file_location("kill_anywhere", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_anywhere"] = module
    spec.loader.exec_module(module)
    return module


ka = _harness_module()


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("kill_anywhere")
    sources = ka.make_corpus(work / "corpus", long_copies=0)
    said: list[str] = []
    harness = ka.Harness(ka.Build(sources, ka.write_config(work / "config.yaml")), work / "runs", said.append)
    clean = harness.run_clean()
    kinds = {(d[0], d[3], d[5]) for d in clean.decisions}
    assert {("talk_anna.mp4", "kept", None), ("talk_anna_copy.mp4", "skipped", "duplicate_md5"),
            ("silent.mp4", "rejected", "no_audio"), ("short.mp4", "rejected", "too_short"),
            ("fail_me.mp4", "failed", "error"), ("missing.mp4", "rejected", "missing_file")} <= kinds, kinds
    assert any(status == "rejected" and name == "no_face.mp4" for name, status, _ in kinds)
    return harness


def _ok(trial) -> None:
    assert trial.landed, f"{trial.name}: the kill never landed"
    assert trial.problems == [], f"{trial.name}: {trial.problems}"


def test_kill_with_a_pending_source_rejection_segment_then_at_named_moments(harness) -> None:
    """The wedge of issue 23 first: killed while a source-level row (no `duration`) waits to be packed;
    then the re-runs are killed after a pack's manifest part, before its segments are deleted, and
    while the ledger is written. The last run completes the build."""
    out, faults, log = harness.folder("wedge")
    process = ka.start(harness.build, out, faults, "source_segment:1:stop", log)
    assert ka.wait_for(process, faults / "hit-source_segment")
    ka.kill_all(process)
    pending = [p for p in (out / ".segments").glob("*/*.tar") if p.stem == p.parent.name]
    assert pending, "a source-level segment was pending at the kill"
    with tarfile.open(pending[0]) as tar:
        row = tar.extractfile([m for m in tar.getmembers() if m.name.endswith(".json")][0]).read()
    assert b'"duration"' not in row
    for point in ("pack_finish", "ledger"):
        process = ka.start(harness.build, out, faults, f"{point}:1:stop", log)
        assert ka.wait_for(process, faults / f"hit-{point}"), f"{point} was never reached:\n{log.read_text()[-3000:]}"
        ka.kill_all(process)
    assert ka.run_to_end(harness.build, out, faults, log) == 0, log.read_text()[-3000:]
    assert ka.problems(out, harness.clean) == []


def _ray_started(process) -> bool:
    """The build's local Ray has a raylet (its driver may still be connecting: inside `ray.init`)."""
    for pid in ka.session_pids(process.pid):
        try:
            if b"raylet" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            continue
    return False


def _stopped_by(harness, out: Path, faults: Path, log: Path, signum: int, ready) -> None:
    """A run of the build that gets `signum` once `ready(process)`: SIGINT to its whole process group (as
    Ctrl-C does: the driver, its local Ray and Ray's workers), SIGTERM to the driver. It ends with exactly
    one line saying how to resume, exit 128 + signum, and no process of its session left. (A run after a
    SIGKILL first says that it took over the killed run's lock.)"""
    process = ka.start(harness.build, out, faults, log=log)
    assert ka.wait_for(process, lambda: ready(process)), log.read_text()[-3000:]
    (os.killpg if signum == signal.SIGINT else os.kill)(process.pid, signum)
    status = process.wait(timeout=60)
    left = ka.session_left(process.pid)
    ka.kill_all(process)
    lines = [line for line in log.read_text().splitlines() if line.strip() and "took over the stale lock" not in line]
    assert status == 128 + signum and len(lines) == 1, (status, log.read_text()[-3000:])
    assert f"stopped by {signal.Signals(signum).name}" in lines[0], lines
    assert "run the same command again to resume" in lines[0], lines
    assert left == [], f"processes left after the stop: {left}"


def test_sigkill_at_a_seeded_time_then_sigterm_in_ray_init_then_group_sigint(harness) -> None:
    """A kill at a seeded moment; the re-run gets SIGTERM as soon as its local Ray is up (inside
    `ray.init`, whose own handler would exit silently), the next one SIGINT to its process group once it
    committed a clip. Each stops at once with one line (exit 143, 130); the last run completes the build."""
    out, faults, log = harness.folder("time-then-term-then-int")
    (seconds,) = ka.kill_times(harness.clean.seconds, 1, seed=7)
    process = ka.start(harness.build, out, faults, log=log)
    try:
        process.wait(timeout=seconds)
    except ka.subprocess.TimeoutExpired:
        pass
    ka.kill_all(process)
    _stopped_by(harness, out, faults, log.with_name("term.txt"), signal.SIGTERM, _ray_started)
    began = time.time()

    def committed(process) -> bool:                    # a clip of this run is committed (or already packed)
        written = [*(out / ".segments").glob("*/*.tar"), *(out / "shards").glob("*.tar")]
        return any(path.stat().st_mtime > began for path in written if path.exists())

    _stopped_by(harness, out, faults, log.with_name("int.txt"), signal.SIGINT, committed)
    assert ka.run_to_end(harness.build, out, faults, log) == 0, log.read_text()[-3000:]
    assert ka.problems(out, harness.clean) == []


def test_unreadable_md5_cache_is_rebuilt(tmp_path: Path, capsys) -> None:
    """A cache file a kill or a disk left damaged never stops a build: the MD5s are computed again."""
    from vividhead.pipelines import fetch
    from vividhead.pipelines.records import Source

    cache = tmp_path / ".cache" / "md5.json"
    cache.parent.mkdir()
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    for damage in (b"{not json", b"\xff\xfe", b"[1, 2]"):
        cache.write_bytes(damage)
        assert [row["md5"] for row in fetch.source_rows([Source("default:a", str(video))], cache)] == [None]
        fetch._remember(cache, {"stamp": "0" * 32})
        assert json.loads(cache.read_text()) == {"stamp": "0" * 32}
    assert "unreadable MD5 cache" in capsys.readouterr().err


def test_the_first_listed_copy_is_kept_whatever_order_the_fetches_end(tmp_path: Path) -> None:
    """The kill-anywhere harness found this: Ray hands back fetch rows as they finish, so a re-run could
    keep the other copy of a duplicate than the run it resumed."""
    import pickle

    from vividhead.pipelines import fetch
    from vividhead.pipelines.records import Source

    first, second = (Source(f"kill:{name}", str(tmp_path / name), md5="0" * 32) for name in ("a.mp4", "b.mp4"))
    rows = [{"index": 1, "planned": pickle.dumps([(second, [])])}, {"index": 0, "planned": pickle.dumps([(first, [])])}]
    plan = fetch.plan(rows, tmp_path / ".cache" / "md5.json")
    assert [(r.source.source_id, r.reason) for r in plan.rejections] == [("kill:b.mp4", "duplicate_md5")]
