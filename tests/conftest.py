"""Shared test fixtures: the ../shared folder, one Ray per test process, and finished builds shared by the run.

Every `vividhead build` that a test runs through `run_vividhead` joins one local Ray started once per
test process (`session_ray`, exported to the build as RAY_ADDRESS), instead of starting its own; a test
that needs a Ray of its own (worker hooks on PYTHONPATH, SIGKILL of the whole build) runs the CLI with
`subprocess` itself, or passes `--address`. `demo_build` and `media_build` run the real `vividhead build`
once per test run, shared by all xdist workers (`built_once`), and return the output directory. Media
tests skip with a clear reason when ../shared/media is absent (VIVIDHEAD_SHARED overrides where
../shared is).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from vividhead.pipelines.ray_setup import with_descendants

REPO = Path(__file__).resolve().parents[1]
RAY_VARIABLE = "VIVIDHEAD_TEST_RAY_ADDRESS"    # where this process's session Ray listens, for run_vividhead
# What every build process of the tests runs with; the session Ray's workers get it too.
OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def shared_path() -> Path:
    return Path(os.environ.get("VIVIDHEAD_SHARED", REPO.parent / "shared"))


# A build config that switches the model stages (8-11) off: stages 1-7 only, fast on a CPU.
CORE_ONLY = "".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate"))


def run_vividhead(*args: str | Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `vividhead` CLI in a fresh process (argument list, no shell) and return the result.

    A build joins the session Ray (see `session_ray`) unless its arguments name `--address`."""
    env = {**os.environ, **OFFLINE}
    if args and args[0] == "build" and "--address" not in args:
        env = joining_session_ray(env)
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"vividhead {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


def joining_session_ray(env: dict[str, str]) -> dict[str, str]:
    """`env` for a build that joins this test process's session Ray (`session_ray`) instead of starting its own."""
    address = os.environ.get(RAY_VARIABLE)
    return {**env, "RAY_ADDRESS": address} if address else env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ray_start(*args: str) -> None:
    """`ray start ARGS` (a private test cluster: no RAY_ADDRESS, no token auth, no usage stats)."""
    env = {**os.environ, **OFFLINE, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    ray = Path(sys.executable).with_name("ray")
    result = subprocess.run([str(ray), "start", *args], capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]


def ray_stop(temp_dir: str) -> None:
    """SIGKILL, by pid, the processes whose command line names this cluster's private temp dir, and their
    descendants (the raylet's agents, whose command lines Ray renames)."""
    needle, named = temp_dir.encode(), set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "cmdline").read_bytes():
                named.add(int(entry.name))
        except OSError:
            continue
    for pid in with_descendants(named):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue


@pytest.fixture(scope="session", autouse=True)
def session_ray() -> Iterator[str]:
    """One local Ray head for this test process's builds (2 CPUs, as the CI machine), stopped at the end.

    Starting Ray costs a build several seconds; the builds of a run share this one. Each xdist worker
    has its own, in a private temp dir, on a free port. Token auth is off for every Ray of the session
    (Ray turns it on when ~/.ray/auth_token exists, and then a driver and a private head disagree)."""
    auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp_dir = tempfile.mkdtemp(prefix="vhray", dir="/tmp")
    address = f"127.0.0.1:{free_port()}"
    try:
        ray_start("--head", "--num-cpus", "2", "--node-ip-address", "127.0.0.1", "--port", address.split(":")[1],
                  "--temp-dir", temp_dir, "--include-dashboard", "false", "--disable-usage-stats",
                  "--object-store-memory", str(300 * 1024**2))
        os.environ[RAY_VARIABLE] = address
        yield address
    finally:
        os.environ.pop(RAY_VARIABLE, None)
        if auth is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth
        ray_stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """The folder `name` that `build(folder)` filled, made once per test run and shared by all xdist workers.

    The first worker to ask builds it under a file lock; the others wait for it and reuse it. A build
    that failed leaves no mark, so the next worker to ask tries again (and reports its own failure)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    path = shared_path()
    if not path.is_dir():
        pytest.skip(f"the shared folder {path} is absent (set VIVIDHEAD_SHARED to point at it)")
    return path


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    path = shared_dir / "media"
    if not (path / "video").is_dir():
        pytest.skip(f"the test media {path / 'video'} is absent")
    return path


@pytest.fixture(scope="session")
def demo_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished `vividhead build --demo` output directory (built once per test run; read it, do not change it)."""
    def build(folder: Path) -> None:
        run_vividhead("build", "--demo", "--out", folder / "demo-out", "--no-progress")

    return built_once(tmp_path_factory, "demo_build", build) / "demo-out"


def media_sources(media_dir: Path, folder: Path) -> Path:
    """A sources.yaml listing the seven videos of ../shared/media/video (by directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sources.yaml"
    path.write_text(f"sources:\n  - path: {str(media_dir / 'video')!r}\n    dataset: shared-media\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def media_build(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished build of the seven videos in ../shared/media/video (built once per test run)."""
    def build(folder: Path) -> None:
        run_vividhead("build", "--sources", media_sources(media_dir, folder), "--out", folder / "out", "--no-progress")

    return built_once(tmp_path_factory, "media_build", build) / "out"


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run a module's torch work on one thread: the CI machine is 2 shared cores, where more threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
