"""Environment failures end a build with one clear line and a non-zero exit; committed work survives
and the next run resumes.

The full disk is real when the test may mount a tmpfs (root, or a user namespace that allows it):
one demo take is built onto a small tmpfs, the tmpfs is then filled to its last few hundred KB and
a second take added, so the build runs out of space in the middle. Otherwise ENOSPC is simulated in
every fsync of the build (driver and Ray workers), through a `sitecustomize.py` on PYTHONPATH. A
read-only output is a read-only bind mount as root, a directory without write permission otherwise.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import CORE_ONLY, run_vividhead
from vividhead.demo import make_demo_corpus
from vividhead.envfail import environment_message

ENOSPC_HOOK = '''
import errno, os


def _full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


os.fsync = _full
'''


def _mount(*args: str) -> bool:
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _one_line(result: subprocess.CompletedProcess, *expected: str) -> str:
    """The run failed with exactly one line on stderr (no traceback) that contains `expected`."""
    assert result.returncode not in (0, None), result.stdout
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


def _parts(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "manifest").glob("*.parquet"))}


@pytest.fixture(scope="module")
def takes(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two demo takes and a build config without the model stages."""
    root = tmp_path_factory.mktemp("env_sources")
    demo = make_demo_corpus(root / "demo").parent
    (root / "config.yaml").write_text(CORE_ONLY)
    return demo, root / "config.yaml"


def _sources(folder: Path, demo: Path, names: tuple[str, ...]) -> Path:
    path = folder / "sources.yaml"
    path.write_text("sources:\n" + "".join(f"  - {str(demo / n)!r}\n" for n in names))
    return path


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path | None]:
    """A 24 MB tmpfs, or None where this test may not mount one."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    if not _mount("-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mnt)):
        yield None
        return
    try:
        yield mnt
    finally:
        _umount(mnt)


def test_out_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("not a directory")
    result = run_vividhead("build", "--demo", "--out", tmp_path / "taken", check=False, timeout=60)
    _one_line(result, str(tmp_path / "taken"), "is a file, not a directory")
    result = run_vividhead("build", "--demo", "--out", tmp_path / "taken" / "sub", check=False, timeout=60)
    _one_line(result, str(tmp_path / "taken"), "is a file")


def test_unreachable_ray_cluster(tmp_path: Path, takes: tuple[Path, Path]) -> None:
    demo, config = takes
    result = run_vividhead("build", "--sources", _sources(tmp_path, demo, ("talk_anna.mp4",)), "--config", config,
                           "--out", tmp_path / "out", "--address", "127.0.0.1:1", check=False, timeout=60)
    _one_line(result, "cannot reach the Ray cluster at 127.0.0.1:1")


def test_environment_message_sees_through_ray_task_errors() -> None:
    cause = OSError(errno.ENOSPC, "No space left on device", "/data/out/.staging/u/clip.mp4")
    try:
        try:
            raise cause
        except OSError as err:
            raise RuntimeError("task failed") from err
    except RuntimeError as wrapped:
        assert environment_message(wrapped) == "/data/out/.staging/u/clip.mp4: no space left on the device"
    assert environment_message(ValueError("bad clip")) is None
    slow = Exception("The current node timed out during startup. This could happen because ...")
    assert environment_message(slow).startswith("the local Ray did not start in time")


def test_full_disk_then_resume(tmp_path: Path, tmpfs: Path | None, takes: tuple[Path, Path]) -> None:
    demo, config = takes
    out = (tmpfs or tmp_path) / "out"
    first = run_vividhead("build", "--sources", _sources(tmp_path, demo, ("talk_anna.mp4",)), "--config", config,
                          "--out", out, "--no-progress")
    assert "kept:     1 clips" in first.stdout
    committed = _parts(out)
    sources = _sources(tmp_path, demo, ("talk_anna.mp4", "talk_ben.mp4"))
    if tmpfs is not None:
        filler = tmpfs / "filler"
        stat = os.statvfs(tmpfs)
        with open(filler, "wb") as handle:
            handle.truncate(0)
            os.posix_fallocate(handle.fileno(), 0, stat.f_bavail * stat.f_frsize - 300 * 1024)
        full = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress",
                             check=False)
        _one_line(full, str(out), "no space left on the device")
        filler.unlink()
    else:
        hooks = tmp_path / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(ENOSPC_HOOK)
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(hooks)}
        full = subprocess.run([sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--config",
                               str(config), "--out", str(out), "--no-progress"], capture_output=True, text=True,
                              env=env, timeout=600)
        _one_line(full, str(out), "no space left on the device")   # the OS error names no path: the output is named
    assert all(_parts(out).get(name) == data for name, data in committed.items()), "committed parts changed"
    resumed = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    assert "1 units already done" in resumed.stdout
    rows = pq.read_table(out / "manifest.parquet").to_pylist()
    assert sorted((Path(r["uri"]).name, r["status"]) for r in rows) == [("talk_anna.mp4", "kept"),
                                                                       ("talk_ben.mp4", "kept")]


def test_read_only_output_then_resume(tmp_path: Path, takes: tuple[Path, Path]) -> None:
    demo, config = takes
    out = tmp_path / "out"
    run_vividhead("build", "--sources", _sources(tmp_path, demo, ("talk_anna.mp4",)), "--config", config,
                  "--out", out, "--no-progress")
    committed = _parts(out)
    sources = _sources(tmp_path, demo, ("talk_anna.mp4", "talk_ben.mp4"))
    as_root = os.geteuid() == 0
    if as_root:
        if not (_mount("--bind", str(out), str(out)) and _mount("-o", "remount,ro,bind", str(out))):
            _umount(out)
            pytest.skip("running as root without permission to mount: a read-only directory cannot be made")
    else:
        out.chmod(0o555)
    try:
        result = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress",
                               check=False, timeout=120)
        _one_line(result, str(out), "read-only file system" if as_root else "permission denied")
    finally:
        if as_root:
            _umount(out)
        else:
            out.chmod(0o755)
    assert _parts(out) == committed
    resumed = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    assert "1 units already done" in resumed.stdout
