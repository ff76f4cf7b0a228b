"""Faults: a worker that raises or dies on one input does not stop the build.

Faults are injected without any hook in the product: a `sitecustomize.py` on PYTHONPATH (which the
local Ray's workers inherit) wraps `UnitExtractor.run` so that one source's decode pass kills its
worker process and another's raises. Ray retries the dead task `run.max_retries` times, then the
unit is recorded as failed; the raising unit is recorded as failed with its error. A re-run
without the faults redoes exactly those units.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from conftest import run_vividhead

SITECUSTOMIZE = '''
import os
from vividhead.pipelines import extract

_original = extract.UnitExtractor.run


def _faulty(self):
    name = os.path.basename(self.unit.path)
    if name == os.environ.get("VH_TEST_DIE"):
        os._exit(3)
    if name == os.environ.get("VH_TEST_RAISE"):
        raise RuntimeError("injected fault for " + name)
    return _original(self)


extract.UnitExtractor.run = _faulty
'''


def test_worker_that_raises_or_dies_is_recorded_and_retried_later(demo_build: Path, tmp_path: Path) -> None:
    demo = demo_build / "demo-sources"
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n" + "".join(f"  - {str(demo / n)!r}\n" for n in ("talk_anna.mp4", "talk_ben.mp4",
                                                                                    "no_face.mp4")))
    config = tmp_path / "config.yaml"
    config.write_text("run: {max_retries: 1}\n"
                      + "".join(f"{name}: {{enabled: false}}\n" for name in ("occlusion", "speech", "sync", "annotate")))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = tmp_path / "out"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(hooks), "VH_TEST_DIE": "talk_anna.mp4",
           "VH_TEST_RAISE": "talk_ben.mp4"}
    result = subprocess.run([sys.executable, "-m", "vividhead.cli", "build", "--sources", str(sources), "--config",
                             str(config), "--out", str(out), "--no-progress"], capture_output=True, text=True,
                            env=env, timeout=400)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {Path(r["uri"]).name: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert (rows["talk_anna.mp4"]["status"], rows["talk_anna.mp4"]["reject_reason"]) == ("failed", "worker_died")
    assert (rows["talk_ben.mp4"]["status"], rows["talk_ben.mp4"]["reject_reason"]) == ("failed", "error")
    assert "injected fault" in rows["talk_ben.mp4"]["reject_detail"]
    assert rows["no_face.mp4"]["reject_reason"] == "no_face"

    again = run_vividhead("build", "--sources", sources, "--config", config, "--out", out, "--no-progress")
    assert "2 redone" in again.stdout and "1 units already done" in again.stdout
    rows = {Path(r["uri"]).name: r for r in pq.read_table(out / "manifest.parquet").to_pylist()}
    assert rows["talk_anna.mp4"]["status"] == "kept" and rows["talk_ben.mp4"]["status"] == "kept"
