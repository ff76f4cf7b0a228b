"""Shared test fixtures: the ../shared folder, and finished builds of the demo corpus and the test media.

`demo_build` and `media_build` run the real `vividhead build` command once per test session (each in
its own process with its own local Ray) and return the output directory. Media tests skip with a
clear reason when ../shared/media is absent (VIVIDHEAD_SHARED overrides where ../shared is).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_path() -> Path:
    return Path(os.environ.get("VIVIDHEAD_SHARED", REPO.parent / "shared"))


# A build config that switches the model stages (8-11) off: stages 1-7 only, fast on a CPU.
CORE_ONLY = "".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate"))


def run_vividhead(*args: str | Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    """Run the `vividhead` CLI in a fresh process (argument list, no shell) and return the result."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", *map(str, args)], capture_output=True, text=True,
                            timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise AssertionError(f"vividhead {' '.join(map(str, args))} exited {result.returncode}:\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}")
    return result


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
    """A finished `vividhead build --demo` output directory (built once per session)."""
    out = tmp_path_factory.mktemp("demo_build") / "demo-out"
    run_vividhead("build", "--demo", "--out", out, "--no-progress")
    return out


def media_sources(media_dir: Path, folder: Path) -> Path:
    """A sources.yaml listing the seven videos of ../shared/media/video (by directory)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sources.yaml"
    path.write_text(f"sources:\n  - path: {str(media_dir / 'video')!r}\n    dataset: shared-media\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def media_build(media_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished build of the seven videos in ../shared/media/video (built once per session)."""
    root = tmp_path_factory.mktemp("media_build")
    out = root / "out"
    run_vividhead("build", "--sources", media_sources(media_dir, root), "--out", out, "--no-progress")
    return out


@pytest.fixture(scope="module", autouse=False)
def one_thread():
    """Run a module's torch work on one thread: the CI machine is 2 shared cores, where more threads only spin."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
