"""One build per output: the lock of `--out`.

Unit tests drive `BuildLock` directly (live, dead-process and silent-host locks, two takers racing
for one stale lock). The CLI tests start a real build, then a second one on the same `--out`: the
second refuses at once naming the first (host, pid, start time) while `inspect` reads safely, and
the first finishes correctly; a build killed with SIGKILL leaves a lock that the next build takes
over.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import CORE_ONLY, joining_session_ray, run_vividhead
from vividhead.buildlock import LOCK_NAME, BuildLock, LockHeld
from vividhead.demo import make_demo_corpus



def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _write_lock(out: Path, host: str, pid: int, age_s: float = 0.0) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / LOCK_NAME
    path.write_text(json.dumps({"host": host, "pid": pid, "started": "2026-01-01T00:00:00Z", "token": "old"}))
    beat = time.time() - age_s
    os.utime(path, (beat, beat))
    return path


def test_second_lock_refuses_naming_the_holder_and_release_frees_it(tmp_path: Path) -> None:
    with BuildLock(tmp_path / "out") as first:
        with pytest.raises(LockHeld) as refused:
            BuildLock(tmp_path / "out").acquire()
        message = str(refused.value)
        assert f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert first.holder.started in message and "--wait" in message
    assert not (tmp_path / "out" / LOCK_NAME).exists()
    with BuildLock(tmp_path / "out"):
        pass


def test_wait_takes_the_lock_when_the_holder_releases(tmp_path: Path) -> None:
    first = BuildLock(tmp_path / "out")
    first.acquire()
    threading.Timer(0.5, first.release).start()
    started = time.monotonic()
    with BuildLock(tmp_path / "out", wait=True, poll_s=0.1):
        assert time.monotonic() - started >= 0.4


def test_lock_of_a_dead_process_on_this_host_is_taken_over(tmp_path: Path) -> None:
    _write_lock(tmp_path / "out", socket.gethostname(), _dead_pid())
    with BuildLock(tmp_path / "out") as lock:
        assert lock.took_over and "is gone" in lock.took_over
        assert json.loads((tmp_path / "out" / LOCK_NAME).read_text())["token"] == lock.holder.token


def test_other_hosts_lock_is_live_while_it_beats_and_stale_after(tmp_path: Path) -> None:
    _write_lock(tmp_path / "out", "node-17.cluster", 4242, age_s=5)
    with pytest.raises(LockHeld, match="pid 4242 on host node-17.cluster"):
        BuildLock(tmp_path / "out", stale_s=60).acquire()
    _write_lock(tmp_path / "out", "node-17.cluster", 4242, age_s=120)
    with BuildLock(tmp_path / "out", stale_s=60) as lock:
        assert "no heartbeat" in lock.took_over


def test_heartbeat_keeps_a_long_build_live(tmp_path: Path) -> None:
    with BuildLock(tmp_path / "out", heartbeat_s=0.1, stale_s=0.5):
        time.sleep(1.0)
        with pytest.raises(LockHeld):
            BuildLock(tmp_path / "out", stale_s=0.5).acquire()


def test_two_takers_of_one_stale_lock_one_wins(tmp_path: Path) -> None:
    _write_lock(tmp_path / "out", "gone-node", 1, age_s=1000)
    results: list[str] = []

    def take() -> None:
        lock = BuildLock(tmp_path / "out", stale_s=60)
        try:
            lock.acquire()
            results.append("got")
        except LockHeld:
            results.append("refused")

    threads = [threading.Thread(target=take) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("got") == 1, results


# ------------------------------------------------------------------------------------ through the CLI


@pytest.fixture(scope="module")
def small_sources(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """sources.yaml with two demo takes, and a build config without the model stages."""
    root = tmp_path_factory.mktemp("lock_sources")
    demo = make_demo_corpus(root / "demo").parent
    sources = root / "sources.yaml"
    sources.write_text("sources:\n" + "".join(f"  - {str(demo / n)!r}\n" for n in ("talk_anna.mp4", "talk_ben.mp4")))
    config = root / "config.yaml"
    config.write_text(CORE_ONLY)
    return sources, config


def _start(sources: Path, config: Path, out: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--config",
                             str(config), "--out", str(out), "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**(env or os.environ), "HF_HUB_OFFLINE": "1"},
                            start_new_session=True)


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def test_second_build_refuses_and_first_finishes(small_sources: tuple[Path, Path], tmp_path: Path) -> None:
    sources, config = small_sources
    out = tmp_path / "out"
    first = _start(sources, config, out, joining_session_ray(dict(os.environ)))
    _wait_for(out / LOCK_NAME, first)
    second = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress",
                           check=False, timeout=60)
    assert second.returncode == 75
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr
    assert f"pid {first.pid} on host {socket.gethostname()}, started 20" in lines[0]
    reading = run_vividhead("inspect", out, check=False)          # reading during a build never disturbs it
    assert "Traceback" not in reading.stderr
    stdout, stderr = first.communicate(timeout=600)
    assert first.returncode == 0, stderr[-3000:]
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted(r["status"] for r in rows) == ["kept", "kept"]
    assert len(list((out / "shards").glob("*.tar"))) >= 1
    assert not (out / LOCK_NAME).exists()


def test_killed_builds_lock_is_taken_over(small_sources: tuple[Path, Path], tmp_path: Path) -> None:
    sources, config = small_sources
    out = tmp_path / "out"
    first = _start(sources, config, out)
    _wait_for(out / LOCK_NAME, first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == first.pid
    again = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    assert f"took over the stale lock of pid {first.pid}" in again.stderr and "is gone" in again.stderr
    assert sorted(r["status"] for r in pq.read_table(out / "manifest.parquet").to_pylist()) == ["kept", "kept"]
    assert not (out / LOCK_NAME).exists()
