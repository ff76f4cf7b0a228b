"""Kill `vividhead train` mid-run and resume: the loss sequence equals an uninterrupted run's, bit for bit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from train_fixtures import write_config, write_shards
from vividhead.models.release import load_release
from vividhead.training.checkpoint import latest_checkpoint

STEPS = 8


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    return write_shards(tmp_path_factory.mktemp("resume-shards"), [2, 2], n_frames=40)


def command(config: Path) -> list[str]:
    return [sys.executable, "-m", "vividhead.cli", "train", "--config", str(config), "--no-progress"]


def env() -> dict[str, str]:
    return os.environ | {"OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "loss.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def test_killed_run_resumes_exactly(tmp_path: Path, shards: list[Path]) -> None:
    settings = {"steps": STEPS, "save_every": 3, "data.num_workers": 2, "flow.audio_drop_prob": 0.3}
    straight = write_config(tmp_path / "straight.yaml", shards, tmp_path / "straight", **settings)
    done = subprocess.run(command(straight), env=env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    killed_cfg = write_config(tmp_path / "killed.yaml", shards, tmp_path / "killed", **settings)
    proc = subprocess.Popen(command(killed_cfg), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = tmp_path / "killed" / "loss.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) >= 5:   # checkpoint 3 is on disk, step 5 ran
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert latest_checkpoint(tmp_path / "killed").name == "step-00000003"
    assert len(losses(tmp_path / "killed")) >= 5          # steps past the checkpoint were logged, then lost

    resumed = subprocess.run(command(killed_cfg), env=env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stderr and "step 3" in resumed.stderr

    expected, got = losses(tmp_path / "straight"), losses(tmp_path / "killed")
    assert [s for s, _ in got] == list(range(1, STEPS + 1))
    assert got == expected                                 # exact floats, after the resume too
    assert expected[-1][1] < expected[0][1]
    # The final model folders are identical release-layout checkpoints.
    a = load_release(tmp_path / "straight" / "Model_Tiny").state_dict()
    b = load_release(tmp_path / "killed" / "Model_Tiny").state_dict()
    assert all((a[k] == b[k]).all() for k in a)
    assert not list((tmp_path / "killed" / "checkpoints").glob(".*.tmp"))
